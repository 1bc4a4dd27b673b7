#!/usr/bin/env python3
"""Write tensor manifests (names, shapes, dtypes) of the GLM-Image weight-bearing components.

Usage::

    python3 tools/dump_manifest.py [--config-dir DIR] [--out DIR] [--dtype BF16|F32|F16]

For each of vision_language_encoder, transformer, vae and text_encoder, the reference class named in
``DIR/model_index.json`` (transformers or diffusers) is instantiated from ``DIR/<component>/config.json`` on the
``meta`` device (no memory is allocated, so the real 16 B-parameter configuration is fine), and
``OUT/<component>.json`` is written::

    {"component": ..., "class": ..., "library": ..., "dtype": "BF16",
     "num_tensors": N, "num_parameters": P,
     "tensors": [{"name": ..., "shape": [...], "dtype": "BF16"}, ...]}   (sorted by name)

The names are exactly the keys that ``save_pretrained`` writes to the safetensors file: the module's
``state_dict`` (which already leaves out non-persistent buffers such as the rotary ``inv_freq``) with tied
duplicates removed, keeping the first name of each shared tensor (e.g. T5's ``encoder.embed_tokens.weight``
is the same tensor as ``shared.weight`` and is not saved). ``tests/python/test_manifests.py`` checks this rule
against the safetensors files of a generated checkpoint.

The dtype is the checkpoint storage dtype in safetensors notation ("BF16" for the real checkpoint, the
default). The configs of diffusers components do not record a dtype, so it is a command-line choice applied
to every tensor; a ``dtype`` field in a transformers config that disagrees is reported as an error.

Defaults: ``--config-dir tests/data/real-configs`` (a copy of the known real configuration files) and
``--out models/manifests``. Point ``--config-dir`` at a generated checkpoint (tools/make_tiny_checkpoint.py)
to get the manifests of its configuration.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ["vision_language_encoder", "transformer", "vae", "text_encoder"]

TORCH_TO_ST = {"bfloat16": "BF16", "float32": "F32", "float16": "F16"}
ST_DTYPES = sorted(set(TORCH_TO_ST.values()))


def _instantiate_meta(component_dir: Path, library: str, class_name: str):
    import torch

    if library == "transformers":
        import transformers

        cls = getattr(transformers, class_name)
        config = cls.config_class.from_pretrained(str(component_dir))
        with torch.device("meta"):
            model = cls(config)
        cfg_dtype = getattr(config, "dtype", None)
        cfg_dtype = str(cfg_dtype).replace("torch.", "") if cfg_dtype is not None else None
        return model, cfg_dtype
    if library == "diffusers":
        import diffusers

        cls = getattr(diffusers, class_name)
        config = cls.load_config(str(component_dir))
        with torch.device("meta"):
            model = cls.from_config(config)
        return model, None
    raise ValueError(f"unknown library {library!r} for {class_name}")


def saved_tensors(model) -> list[tuple[str, list[int]]]:
    """(name, shape) of every tensor save_pretrained writes: state_dict minus tied duplicates."""
    seen: set[int] = set()
    out = []
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) in seen:
            continue
        seen.add(id(t))
        out.append((name, list(t.shape)))
    return sorted(out)


def manifest(config_dir: Path, component: str, dtype: str) -> dict:
    index = json.loads((config_dir / "model_index.json").read_text())
    library, class_name = index[component]
    model, cfg_dtype = _instantiate_meta(config_dir / component, library, class_name)
    if cfg_dtype is not None and TORCH_TO_ST.get(cfg_dtype) not in (None, dtype):
        raise SystemExit(f"{component}: config dtype {cfg_dtype} disagrees with --dtype {dtype}")
    tensors = saved_tensors(model)
    nparams = 0
    for _, shape in tensors:
        n = 1
        for s in shape:
            n *= s
        nparams += n
    return {
        "component": component,
        "library": library,
        "class": class_name,
        "dtype": dtype,
        "num_tensors": len(tensors),
        "num_parameters": nparams,
        "tensors": [{"name": n, "shape": s, "dtype": dtype} for n, s in tensors],
    }


def to_json(m: dict) -> str:
    """Stable formatting: header fields one per line, one tensor per line."""
    lines = ["{"]
    for key in ("component", "library", "class", "dtype", "num_tensors", "num_parameters"):
        lines.append(f"  {json.dumps(key)}: {json.dumps(m[key])},")
    lines.append('  "tensors": [')
    rows = [
        "    " + json.dumps({"name": t["name"], "shape": t["shape"], "dtype": t["dtype"]}, separators=(", ", ": "))
        for t in m["tensors"]
    ]
    lines.append(",\n".join(rows))
    lines.append("  ]")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dump(config_dir: Path, out_dir: Path, dtype: str = "BF16", components=None) -> dict[str, dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for comp in components or COMPONENTS:
        m = manifest(config_dir, comp, dtype)
        (out_dir / f"{comp}.json").write_text(to_json(m), encoding="utf-8")
        result[comp] = m
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config-dir", type=Path, default=REPO / "tests" / "data" / "real-configs",
                    help="folder in the pipeline layout with model_index.json and <component>/config.json")
    ap.add_argument("--out", type=Path, default=REPO / "models" / "manifests", help="output folder")
    ap.add_argument("--dtype", choices=ST_DTYPES, default="BF16", help="checkpoint storage dtype")
    ap.add_argument("--component", action="append", choices=COMPONENTS, help="only these (repeatable)")
    args = ap.parse_args(argv)
    res = dump(args.config_dir, args.out, args.dtype, args.component)
    for comp, m in res.items():
        print(f"{comp:26s} {m['class']:36s} {m['num_tensors']:6d} tensors {m['num_parameters']:>15,d} parameters")
    return 0


if __name__ == "__main__":
    sys.exit(main())
