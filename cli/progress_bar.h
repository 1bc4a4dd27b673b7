// A one-line-per-stage progress bar on a terminal, fed by glmimage's Progress callback.
#pragma once

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "glmimage/glmimage.h"

namespace glmimage::cli {

class ProgressBar {
  public:
    // `out` is usually stderr. A disabled bar ignores every call, so callers need no checks.
    ProgressBar(std::FILE* out, bool enabled);
    ~ProgressBar();
    ProgressBar(const ProgressBar&) = delete;
    ProgressBar& operator=(const ProgressBar&) = delete;

    // Shown before the stage name, e.g. "[2/3] " when several images are made.
    void set_prefix(const std::string& prefix) { prefix_ = prefix; }
    // A new stage (or a restart of the same one) ends the previous line and starts a new one.
    void update(const Progress& progress);
    // Ends the current line, if one is open (for example before an error message).
    void finish();

    // Whether a bar should be drawn by default: only when stderr is a terminal.
    static bool stderr_is_terminal();

  private:
    void draw(bool force);

    std::FILE* out_;
    bool enabled_;
    std::string prefix_;
    std::string stage_;
    int64_t step_ = 0, total_ = 0;
    bool open_ = false;       // a line is drawn and not yet ended
    size_t last_len_ = 0;     // length of the last drawn line, to blank leftovers
    int64_t drawn_step_ = -1; // step shown by the last draw
    int64_t first_step_ = 0;  // step of the stage's first report
    std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace glmimage::cli
