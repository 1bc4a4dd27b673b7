#include "progress_bar.h"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace glmimage::cli {
namespace {

// Redrawing faster than this only costs terminal bandwidth.
constexpr auto kRedrawInterval = std::chrono::milliseconds(100);

const char* unit_of(const std::string& stage) {
    if (stage == "ar") return "tokens";
    if (stage == "denoise") return "steps";
    return "";
}

int terminal_columns(std::FILE* out) {
    winsize ws{};
    if (::ioctl(::fileno(out), TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20) return ws.ws_col;
    return 80;
}

std::string clock_text(double seconds) {
    const long s = std::lround(std::max(0.0, seconds));
    char buf[32];
    if (s >= 3600) std::snprintf(buf, sizeof buf, "%ld:%02ld:%02ld", s / 3600, (s / 60) % 60, s % 60);
    else std::snprintf(buf, sizeof buf, "%ld:%02ld", s / 60, s % 60);
    return buf;
}

}  // namespace

ProgressBar::ProgressBar(std::FILE* out, bool enabled) : out_(out), enabled_(enabled && out != nullptr) {}

ProgressBar::~ProgressBar() { finish(); }

bool ProgressBar::stderr_is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

void ProgressBar::update(const Progress& p) {
    if (!enabled_) return;
    const bool restart = p.stage != stage_ || p.step < step_ || (!open_ && p.step < p.total);
    if (restart) {
        finish();
        stage_ = p.stage;
        start_ = std::chrono::steady_clock::now();
        last_len_ = 0;
        drawn_step_ = -1;
        first_step_ = std::max<int64_t>(0, p.step);
        open_ = true;
    } else if (!open_) {
        return;  // a repeated final report of a stage already drawn as done
    }
    step_ = std::max<int64_t>(0, p.step);
    total_ = std::max<int64_t>(0, p.total);
    const bool done = total_ > 0 && step_ >= total_;
    draw(restart || done);
    if (done) finish();
}

void ProgressBar::draw(bool force) {
    const auto now = std::chrono::steady_clock::now();
    if (!force && now - last_draw_ < kRedrawInterval) return;
    last_draw_ = now;
    drawn_step_ = step_;
    const double elapsed = std::chrono::duration<double>(now - start_).count();
    const bool done = total_ > 0 && step_ >= total_;

    const std::string total_text = std::to_string(total_);
    std::string right = " ";
    right += std::to_string(step_) + "/" + total_text + " " + unit_of(stage_);
    // The first report comes after the first step, at `start_`: measure from there.
    if (elapsed > 0.05 && step_ > first_step_) {
        const double rate = (step_ - first_step_) / elapsed;
        char buf[64];
        std::snprintf(buf, sizeof buf, "  %.1f/s", rate);
        right += buf;
        right += done ? "  " + clock_text(elapsed) : "  eta " + clock_text((total_ - step_) / rate);
    }
    std::string left = prefix_ + stage_;
    if (left.size() < prefix_.size() + 8) left.resize(prefix_.size() + 8, ' ');

    const int cols = terminal_columns(out_);
    // Room for the widest right-hand side this stage can have, so the bar does not jump.
    const size_t right_max = 2 * total_text.size() + 8 + 28;
    const int room = cols - 1 - static_cast<int>(left.size() + right_max) - 3;
    const int width = std::clamp(room, 0, 40);
    std::string line = left;
    if (width >= 5) {
        const double frac = total_ > 0 ? std::min(1.0, static_cast<double>(step_) / total_) : 0.0;
        const int filled = static_cast<int>(frac * width);
        line += " [" + std::string(filled, '#') + std::string(width - filled, '-') + "]";
    }
    line += right;
    // Blank what a longer previous line left behind; no escape codes, so logs stay readable.
    const size_t len = line.size();
    if (len < last_len_) line.append(last_len_ - len, ' ');
    last_len_ = len;
    std::fprintf(out_, "\r%s", line.c_str());
    std::fflush(out_);
}

void ProgressBar::finish() {
    if (!enabled_ || !open_) return;
    if (drawn_step_ != step_) draw(true);
    std::fputc('\n', out_);
    std::fflush(out_);
    open_ = false;
}

}  // namespace glmimage::cli
