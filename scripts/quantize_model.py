#!/usr/bin/env python3
"""Make a quantized copy of a float transformers model folder with llmcompressor, on
the controller's CPU (no calibration data: the schemes below need none).

    scripts/build-model --quantize w8a8 SRC OUT      (runs this in the quantize venv)

Schemes, as the experts' `quantization` field names them (llmhost/perf.py says which
CPU serves which with the pinned vLLM):
- w8a8:  int8 weights per channel, int8 activations per token at run time
         (compressed-tensors W8A8; vLLM's oneDNN int8 kernels, x86 and Arm);
- w4a8:  int4 weights in groups, int8 activations per token at run time
         (compressed-tensors W4A8; Arm's KleidiAI kernels through torch);
- w4a16: int4 weights in groups of 64, activations in the served dtype (AVX-512 x86).
  Made here by plain rounding, which loses answers on small models (docs/performance.md):
  check it with the numerics check before serving it.

The output folder gets the tokenizer, the chat template, the source's reference file
(the float32 answers and perplexities the smoke test compares with) and
llmhost-quantized.json (scheme, source, tool versions, seconds).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

SCHEMES = {
    "w8a8": {"scheme": "W8A8"},
    "w4a8": {"scheme": "W4A8"},
    "w4a16": {"config_groups": {"group_0": {
        "targets": ["Linear"],
        "weights": {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 64}}}},
}
KEEP = ("generation_config.json", "chat_template.jinja", "llmhost-reference.json")


def quantize(src: Path, out: Path, scheme: str) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import llmcompressor  # noqa: PLC0415
    import torch  # noqa: PLC0415
    import transformers  # noqa: PLC0415
    from llmcompressor import oneshot  # noqa: PLC0415
    from llmcompressor.modifiers.quantization import QuantizationModifier  # noqa: PLC0415

    t0 = time.time()
    model = transformers.AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16)
    tok = transformers.AutoTokenizer.from_pretrained(src)
    oneshot(model=model, recipe=QuantizationModifier(targets="Linear", ignore=["lm_head"], **SCHEMES[scheme]))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, save_compressed=True)
    tok.save_pretrained(tmp)
    for f in KEEP:
        if (src / f).exists():
            shutil.copy2(src / f, tmp / f)
    record = {"scheme": scheme, "source": str(src), "seconds": round(time.time() - t0, 1),
              "made_with": f"llmcompressor {llmcompressor.__version__}, transformers {transformers.__version__}, "
                           f"torch {torch.__version__}, no calibration data, lm_head kept in bf16"}
    (tmp / "llmhost-quantized.json").write_text(json.dumps(record, indent=1) + "\n")
    for f in tmp.iterdir():  # transformers writes the weights 0600: readable like the source's
        f.chmod(0o644)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return record


def main(argv: list[str]) -> int:
    if len(argv) != 3 or argv[0] not in SCHEMES:
        print(f"usage: quantize_model.py {{{','.join(SCHEMES)}}} SRC OUT", file=sys.stderr)
        return 2
    src, out = Path(argv[1]).resolve(), Path(argv[2]).resolve()
    if not (src / "config.json").is_file():
        print(f"quantize_model.py: {src} is not a transformers model folder (no config.json)", file=sys.stderr)
        return 2
    rec = quantize(src, out, argv[0])
    print(f"{argv[0]} copy of {src.name} in {out} ({rec['seconds']} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
