"""CUDA backend correctness on the GPU machine (not in CI).

Runs the prebuilt llmrun (--backend cuda) on engines compiled here
(test/gpu/prepare.sh) and compares with Hugging Face transformers:
  * the golden cases (test/golden/cases): logits and greedy continuations
    recorded by transformers (fp32 within 1e-4 relative L2 and identical
    greedy tokens; bf16 as in test/golden/golden_test.cpp),
  * Llama-3.1-8B- and Qwen2-7B-shaped models (full widths, 4 layers, bf16
    random weights made here with transformers; and the same after a short
    training on a made-up language, for logits with realistic margins, the
    "-trained" cases): transformers' forward in fp32 on the same bf16
    weights is the reference; relative L2 <= 2e-2,
    top-1 agreement >= 99% (and 100% where fp32's top-2 gap is at least
    0.1: random weights give near-flat logits), greedy 64-token
    continuations identical for at least 9 of 10 prompts, ragged batch and
    chunked prefill equal to single runs (logits within 1.25x of how far
    transformers' bf16 forward moves a prompt's logits in a batch),
  * build/test/backend_test on the CUDA backend: the device sampler gives
    every row of every filter, penalty and special value the host Sampler's
    token, logprob and top logprobs; GEMMs through the decode GEMV and through
    cuBLASLt meet fp64 sums of the same 16-bit values; paged attention (the
    plan's kernel on the test's own ragged batches, on fp32, bf16 and f16
    plans of several head shapes and page sizes) meets an fp64 softmax.
Prints one table of pass/fail per case.
usage: python3 test/gpu/check.py LLMRUN ENGINES_DIR WORK_DIR
"""
import json
import os
import subprocess
import sys
import time

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM

LLMRUN, ENGINES, WORK = sys.argv[1], sys.argv[2], sys.argv[3]
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROWS = []


def row(case, check, value, ok):
    """One line of the table; ok None: information, neither pass nor fail."""
    result = "info" if ok is None else "pass" if ok else "FAIL"
    ROWS.append((case, check, value, result))
    print(f"{case:18} {check:34} {value:>24} {result}", flush=True)


def llmrun(*args):
    cmd = [LLMRUN, *args, "--backend", "cuda"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])}...: {done.stderr.strip()}")
    return done.stdout


def ids(prompt):
    return ",".join(str(int(t)) for t in prompt)


def our_logits(engine, weights, prompts, name):
    out = os.path.join(WORK, name + ".safetensors")
    args = ["logits", engine, "--weights", weights, "--out", out]
    for p in prompts:
        args += ["--prompt-ids", ids(p)]
    llmrun(*args)
    tensors = load_file(out)
    return [tensors[f"logits.{i}"].double() for i in range(len(prompts))]


def our_greedy(engine, weights, prompts, n=64, extra=()):
    args = ["generate", engine, "--weights", weights, "--max-tokens", str(n), "--temperature", "0",
            "--ignore-eos", "--json", *extra]
    for p in prompts:
        args += ["--prompt-ids", ids(p)]
    return [json.loads(line)["tokens"] for line in llmrun(*args).splitlines()]


def rel_l2(a, b):
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


def golden(case):
    engine, weights = os.path.join(ENGINES, case), os.path.join(ROOT, "test/golden/cases", case)
    expected = load_file(os.path.join(weights, "expected.safetensors"))
    bf16 = "greedy_bf16.0" in expected
    prompts = [expected[f"prompt.{i}"].tolist() for i in range(4)]
    logits = our_logits(engine, weights, prompts, case)
    worst = max(rel_l2(logits[i], expected[f"logits.{i}"].double()) for i in range(4))
    if bf16:
        own = max(rel_l2(expected[f"logits_bf16.{i}"].double(), expected[f"logits.{i}"].double())
                  for i in range(4))
        row(case, "logits rel L2 vs fp32 (<=1.25x HF bf16)", f"{worst:.2e} (HF {own:.2e})",
            worst <= 1.25 * own)
        vs_bf16 = max(rel_l2(logits[i], expected[f"logits_bf16.{i}"].double()) for i in range(4))
        row(case, "logits rel L2 vs HF bf16 (<=1.5e-2)", f"{vs_bf16:.2e}", vs_bf16 <= 1.5e-2)
    else:
        row(case, "logits rel L2 vs fp32 (<=1e-4)", f"{worst:.2e}", worst <= 1e-4)
    tokens = our_greedy(engine, weights, prompts)
    same = 0
    for i in range(4):
        ref = expected[(f"greedy_bf16.{i}" if bf16 else f"greedy.{i}")].tolist()
        n = 64
        if bf16:
            margins = expected[f"greedy_bf16_margin.{i}"].tolist()
            n = next((k for k, m in enumerate(margins) if m < 0.05), 64)
        same += n >= 16 and tokens[i][:n] == ref[:n]
    row(case, "greedy tokens identical", f"{same}/4", same == 4)


class Successors:
    """A made-up language for weights with realistic margins: 512 of the
    vocabulary's tokens, each followed by its own successor 90% of the time
    and by any of the 512 otherwise, so that after a short training the
    model's next token is clear (as in a real model's confident positions)
    where random weights leave near-ties everywhere."""

    WORDS, FOLLOW = 512, 0.9

    def __init__(self, vocab, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.words = torch.randperm(vocab, generator=self.gen)[:self.WORDS]
        self.successor = torch.randperm(self.WORDS, generator=self.gen)

    def sample(self, rows, length):
        x = torch.empty(rows, length, dtype=torch.long)
        x[:, 0] = torch.randint(0, self.WORDS, (rows,), generator=self.gen)
        for i in range(1, length):
            follow = torch.rand(rows, generator=self.gen) < self.FOLLOW
            other = torch.randint(0, self.WORDS, (rows,), generator=self.gen)
            x[:, i] = torch.where(follow, self.successor[x[:, i - 1]], other)
        return self.words[x]


def train(model, language, steps=200):
    """A short AdamW run on the language (fp32 weights, bf16 autocast); the
    model comes back in bf16. Prints the loss: the language's own entropy
    rate, about 0.95 nats a token, is the floor (200 steps reach 1.03-1.06)."""
    model.float().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0)
    for step in range(steps):
        x = language.sample(32, 128).cuda()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(x, labels=x).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step}: loss {loss.item():.3f}", flush=True)
    del optimizer
    return model.to(torch.bfloat16).eval()


def shaped(config_name, seed=0, trained=False):
    """Checks on the config's engine with random weights (trained: after a
    short training on Successors, with prompts from that language)."""
    case = config_name + ("-trained" if trained else "")
    engine = os.path.join(ENGINES, config_name)
    weights = os.path.join(WORK, case)
    config = AutoConfig.from_pretrained(os.path.join(ROOT, "test/gpu/configs", config_name))
    torch.manual_seed(seed)
    t0 = time.time()
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    lengths = (8, 16, 24, 32, 40, 48, 56, 64, 96, 128)
    if trained:
        language = Successors(config.vocab_size, seed + 2)
        model = train(model, language)
        prompts = [language.sample(1, n)[0].tolist() for n in lengths]
    else:
        gen = torch.Generator().manual_seed(seed + 1)
        prompts = [torch.randint(0, config.vocab_size, (n,), generator=gen).tolist() for n in lengths]
    model.save_pretrained(weights)
    print(f"{case}: made and saved the checkpoint in {time.time() - t0:.0f} s", flush=True)

    def reference(m):
        logits, greedy = [], []
        with torch.no_grad():
            for p in prompts:
                x = torch.tensor([p], device="cuda")
                logits.append(m(x).logits[0].double().cpu())
                out = m.generate(x, max_new_tokens=64, min_new_tokens=64, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
                greedy.append(out[0, len(p):].tolist())
        return logits, greedy

    # transformers in bf16 is the yardstick for what bf16 compute can reach,
    # also for how far a batch moves one prompt's logits (right-padded, so
    # its GEMMs run at another row count): the first prompt within all ten.
    bf16_refs, bf16_greedy = reference(model.eval())
    with torch.no_grad():
        width = max(len(p) for p in prompts)
        batch = torch.tensor([p + [0] * (width - len(p)) for p in prompts], device="cuda")
        mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in prompts], device="cuda")
        in_batch = model(batch, attention_mask=mask).logits[0, :len(prompts[0])].double().cpu()
    hf_ragged = rel_l2(in_batch, bf16_refs[0])
    model = model.float()  # fp32 compute on the same bf16 weights: the reference
    refs, greedy_refs = reference(model)
    del model
    torch.cuda.empty_cache()

    logits = our_logits(engine, weights, prompts, case)
    worst = max(rel_l2(a, b) for a, b in zip(logits, refs))
    row(case, "logits rel L2 vs fp32 (<=2e-2)", f"{worst:.2e}", worst <= 2e-2)

    # Random weights give near-flat logits (top-2 gaps of a few hundredths
    # where bf16 moves logits by about as much), so top-1 agreement over all
    # positions counts near-ties. Where fp32's top-2 gap is at least 0.1,
    # bf16 rounding should not decide.
    def decided(ref):
        top2 = ref.topk(2, dim=-1).values
        return (top2[:, 0] - top2[:, 1]) >= 0.1

    def agreeing(candidate, where=None):
        """Positions whose argmax is fp32's, over all prompts (only where `where(ref)`)."""
        count = 0
        for a, b in zip(candidate, refs):
            same = a.argmax(-1) == b.argmax(-1)
            count += int((same & where(b) if where else same).sum())
        return count

    agree = agreeing(logits)
    total = sum(len(p) for p in prompts)
    row(case, "top-1 agreement (>=99%)", f"{100 * agree / total:.2f}%", agree >= 0.99 * total)
    tokens = our_greedy(engine, weights, prompts)
    same = sum(a == b for a, b in zip(tokens, greedy_refs))
    row(case, "greedy 64 identical (>=9/10)", f"{same}/10", same >= 9)
    hf = max(rel_l2(a, b) for a, b in zip(bf16_refs, refs))
    hf_agree = agreeing(bf16_refs)
    hf_same = sum(a == b for a, b in zip(bf16_greedy, greedy_refs))
    ours_vs_hf = max(rel_l2(a, b) for a, b in zip(logits, bf16_refs))
    info = f"L2 {hf:.2e}, top-1 {100 * hf_agree / total:.2f}%, greedy {hf_same}/10"
    row(case, "context: transformers bf16 vs fp32", info, None)
    row(case, "context: ours vs transformers bf16", f"L2 {ours_vs_hf:.2e}", None)
    # Where fp32 has a clear winner ours must agree everywhere, as
    # transformers' bf16 does (context).
    clear = sum(int(decided(b).sum()) for b in refs)
    ours_clear, hf_clear = agreeing(logits, decided), agreeing(bf16_refs, decided)
    row(case, "top-1 where fp32 gap >= 0.1 (all)", f"{ours_clear}/{clear} (HF bf16 {hf_clear})", ours_clear == clear)
    # The same prompts one at a time and with chunked prefill: same tokens.
    alone = [our_greedy(engine, weights, [p], 16)[0] for p in prompts[:3]]
    chunked = our_greedy(engine, weights, prompts, 16, ("--tokens-per-forward", "32"))
    batched = our_greedy(engine, weights, prompts, 16)
    row(case, "ragged batch == single runs", "3 prompts", alone == [t[:16] for t in batched[:3]])
    row(case, "chunked prefill == one pass", "10 prompts", chunked == batched)
    # A batch runs its GEMMs at other row counts (the GEMV below 9 rows), so
    # bf16 outputs round differently and the logits move by about as much as
    # bf16 moves them from fp32; transformers' bf16 forward moves as much
    # (1.2e-2 on the H200), so that is the tolerance, not bit equality.
    single = our_logits(engine, weights, prompts[:1], case + "_one")[0]
    ragged = rel_l2(logits[0], single)
    row(case, "ragged logits == single (<=1.25x HF)", f"{ragged:.2e} (HF {hf_ragged:.2e})",
        ragged <= max(1e-3, 1.25 * hf_ragged))


def backend_test(case, check, gtest_filter, engine="llama_gqa_rope3"):
    test = os.path.join(os.path.dirname(LLMRUN), "..", "test", "backend_test")
    env = dict(os.environ, LLMC_TEST_BACKEND="cuda", LLMC_TEST_ENGINE=os.path.join(ENGINES, engine))
    done = subprocess.run([test, "--gtest_filter=" + gtest_filter], capture_output=True, text=True, env=env)
    last = [line for line in done.stdout.splitlines() if "PASSED" in line or "FAILED" in line]
    if done.returncode != 0:
        print(done.stdout[-4000:], done.stderr[-2000:])
    row(case, check, last[0].strip() if last else "no result", done.returncode == 0)


def main():
    os.makedirs(WORK, exist_ok=True)
    print(torch.cuda.get_device_name(0), torch.__version__, flush=True)
    backend_test("sampling", "device rows == host Sampler", "BackendSample.*")
    backend_test("gemm", "GEMV, cuBLASLt == fp64 sums", "BackendGemm.*:GemvShape.*")
    for engine, check in (("llama_gqa_rope3", "fp32 (SIMT walk) == fp64"),
                          ("llama-3.1-8b-4l", "bf16, 128-dim heads == fp64"),
                          ("qwen2-7b-4l", "bf16, GQA group of 7 == fp64"),
                          ("attention-64-dim", "bf16, 64-dim heads == fp64"),
                          ("attention-f16-pages-32", "f16, 32-token pages == fp64"),
                          ("attention-6-kv-heads", "bf16, 6 kv heads == fp64")):
        backend_test("attention", check, "BackendAttention.*", engine)
    for case in sorted(os.listdir(os.path.join(ROOT, "test/golden/cases"))):
        golden(case)
    for trained in (False, True):
        for config_name in sorted(os.listdir(os.path.join(ROOT, "test/gpu/configs"))):
            shaped(config_name, trained=trained)
    print("\n| case | check | value | result |\n| --- | --- | --- | --- |")
    for r in ROWS:
        print("| " + " | ".join(r) + " |")
    failed = sum(r[3] == "FAIL" for r in ROWS)
    passed = sum(r[3] == "pass" for r in ROWS)
    print(f"\n{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
