#!/usr/bin/env python3
"""Generates llmc's golden test cases: tiny random-weight Hugging Face
checkpoints and the reference outputs of transformers for them.

    python3 test/golden/make_golden.py OUT_DIR [--search] [--cases a,b]

For each case OUT_DIR/<case>/ gets config.json, generation_config.json and
model.safetensors (as `save_pretrained` writes them) and expected.safetensors:

    prompt.{i}              int32   [L_i]      prompt token ids
    logits.{i}              float32 [L_i, V]   teacher-forced logits, fp32 on CPU
    greedy.{i}              int32   [64]       greedy continuation, fp32 on CPU
    greedy_margin.{i}       float32 [64]       top-1 minus top-2 logit at each greedy step
  bf16 cases also (the model in torch.bfloat16 on CPU, values stored as float32):
    logits_bf16.{i}         float32 [L_i, V]
    greedy_bf16.{i}         int32   [64]
    greedy_bf16_margin.{i}  float32 [64]

Greedy decoding ignores EOS (the configs do name eos_token_id 2): all 64
tokens are argmaxes of the raw logits. Each case's weight seed (SEEDS below) is
chosen so that no fp32 greedy step is a near tie (margin >= 1e-3 on all 64
steps of every prompt) and, for bf16, every prompt's first BF16_MIN_PREFIX
greedy steps have margins >= 0.05 (see BF16_MIN_PREFIX for why not all 64).
`--search` starts at the recorded seed, tries the following ones until a seed
passes, writes that one and prints it so it can be recorded here.

Needs torch, transformers (written against 5.x) and safetensors. Runs on the
CPU only (CUDA is hidden), single-threaded, with deterministic algorithms.
"""

import argparse
import copy
import json
import os
import shutil
import sys
import time

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # before torch is imported: CPU only

NEW_TOKENS = 64
PROMPT_LENGTHS = (5, 17, 33, 48)
FIRST_PROMPT_TOKEN = 3  # 0..2 are left to pad/bos/eos
MATRIX_STD = 0.15  # matrices and embeddings: logits get a spread of a few units
NORM_STD = 0.1  # norm weights: 1 + normal(0, NORM_STD)
BIAS_STD = 0.1
MIN_MARGIN = {"fp32": 1e-3, "bf16": 0.05}
# bf16 greedy runs are chaotic: about one step in twelve has a bf16 margin
# under 0.05, so no seed keeps all 4x64 steps above it. A seed must instead give
# every prompt a trusted prefix (the steps before the first margin under 0.05)
# of at least this many tokens; the fp32 greedy runs must pass on all 64 steps.
BF16_MIN_PREFIX = 16

# Weight seed of each case (torch.manual_seed before re-initialisation);
# found with --search.
SEEDS = {
    "llama_gqa_rope3": 1,
    "qwen2_bias_tied": 2,
    "llama_mha": 8,
    "llama_head_dim": 1,
    "llama_bf16": 3841,
}

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 10000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    # Small, so that the scaling changes frequencies at head_dim 16: wavelengths
    # under 8 stay, over 32 are divided by 8, the one in between is blended.
    "original_max_position_embeddings": 32,
}

COMMON = dict(
    vocab_size=512,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=256,
    hidden_act="silu",
    bos_token_id=1,
    eos_token_id=2,
)

# name -> (architecture, checkpoint dtype, prompt seed, config keyword arguments)
CASES = {
    "llama_gqa_rope3": ("LlamaForCausalLM", "float32", 101, dict(
        COMMON, intermediate_size=128, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_parameters=dict(LLAMA3_ROPE), tie_word_embeddings=False)),
    "qwen2_bias_tied": ("Qwen2ForCausalLM", "float32", 102, dict(
        COMMON, intermediate_size=160, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True, use_sliding_window=False)),
    "llama_mha": ("LlamaForCausalLM", "float32", 103, dict(
        COMMON, intermediate_size=128, num_key_value_heads=4, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False)),
    "llama_head_dim": ("LlamaForCausalLM", "float32", 104, dict(
        COMMON, intermediate_size=128, num_key_value_heads=2, head_dim=32, rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False)),
    "llama_bf16": ("LlamaForCausalLM", "bfloat16", 105, dict(
        COMMON, intermediate_size=128, num_key_value_heads=2, rms_norm_eps=1e-5,
        rope_parameters=dict(LLAMA3_ROPE), tie_word_embeddings=False)),
}

# What each case pins down, for README.md.
DESCRIPTIONS = {
    "llama_gqa_rope3": "Llama, GQA 4:2 (head_dim 16), llama3 rope scaling with "
                       "original_max_position_embeddings 32 (all three frequency bands), untied, fp32",
    "qwen2_bias_tied": "Qwen2, q/k/v biases, tied embeddings (no lm_head.weight), GQA 4:2, "
                       "rope_theta 1e6, intermediate 160, rms_norm_eps 1e-6, fp32",
    "llama_mha": "Llama, MHA (4 kv heads), default rope, fp32",
    "llama_head_dim": "Llama, explicit head_dim 32 (heads*head_dim 128 != hidden 64), GQA 4:2, fp32",
    "llama_bf16": "as llama_gqa_rope3 but a bfloat16 checkpoint; also bf16 logits and greedy tokens",
}


# ---------------------------------------------------------------------------
# A mirror of models/ModelConfig.cpp (what llmc reads from config.json).


class ConfigError(Exception):
    pass


def _find(obj, key):
    value = obj.get(key)
    return value  # JSON null reads as absent, as in the C++ reader


def _positive_int(obj, key, path):
    value = _find(obj, key)
    if value is None:
        raise ConfigError(f"missing field '{path}'")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"field '{path}' must be a positive integer, got {value!r}")
    return value


def _positive_number(obj, key, path, fallback=None):
    value = _find(obj, key)
    if value is None:
        if fallback is not None:
            return float(fallback)
        raise ConfigError(f"missing field '{path}'")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0) \
            or value == float("inf"):
        raise ConfigError(f"field '{path}' must be a positive number, got {value!r}")
    return float(value)


def _flag(obj, key, fallback):
    value = _find(obj, key)
    if value is None:
        return fallback
    if not isinstance(value, bool):
        raise ConfigError(f"field '{key}' must be true or false, got {value!r}")
    return value


def _string(obj, key, fallback):
    value = _find(obj, key)
    if value is None:
        return fallback
    if not isinstance(value, str):
        raise ConfigError(f"field '{key}' must be a string, got {value!r}")
    return value


def _token_ids(obj, key):
    value = _find(obj, key)
    if value is None:
        return []
    ids = value if isinstance(value, list) else [value]
    for token in ids:
        if isinstance(token, bool) or not isinstance(token, int) or token < 0:
            raise ConfigError(f"field '{key}' must be a token id or a list of token ids")
    return list(ids)


def parse_like_llmc(cfg):
    """Returns the DecoderConfig fields llmc would read, or raises ConfigError."""
    if not isinstance(cfg, dict):
        raise ConfigError("expected a JSON object")
    out = {}
    arch = _find(cfg, "architectures")
    if not isinstance(arch, list) or len(arch) != 1 or not isinstance(arch[0], str):
        raise ConfigError("field 'architectures' must list exactly one architecture")
    families = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
    if arch[0] not in families:
        raise ConfigError(f"unsupported architecture '{arch[0]}'")
    out["architecture"], out["family"] = arch[0], families[arch[0]]
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads"):
        out[key] = _positive_int(cfg, key, key)
    out["num_key_value_heads"] = (_positive_int(cfg, "num_key_value_heads", "num_key_value_heads")
                                  if _find(cfg, "num_key_value_heads") is not None
                                  else out["num_attention_heads"])
    if out["num_attention_heads"] % out["num_key_value_heads"]:
        raise ConfigError("num_attention_heads must be a multiple of num_key_value_heads")
    if _find(cfg, "head_dim") is not None:
        out["head_dim"] = _positive_int(cfg, "head_dim", "head_dim")
    else:
        if out["hidden_size"] % out["num_attention_heads"]:
            raise ConfigError("hidden_size must be a multiple of num_attention_heads")
        out["head_dim"] = out["hidden_size"] // out["num_attention_heads"]
    out["max_position_embeddings"] = _positive_int(cfg, "max_position_embeddings",
                                                   "max_position_embeddings")
    out["rms_norm_eps"] = _positive_number(cfg, "rms_norm_eps", "rms_norm_eps")

    # rope: rope_parameters (transformers 5) or rope_theta + rope_scaling.
    parameters = _find(cfg, "rope_parameters")
    path = "rope_parameters" if parameters is not None else "rope_scaling"
    scaling = parameters if parameters is not None else _find(cfg, "rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise ConfigError(f"field '{path}' must be an object or null")
    rope = {"scaling": "none"}
    rope["theta"] = (_positive_number(parameters, "rope_theta", path + ".rope_theta")
                     if parameters is not None
                     else _positive_number(cfg, "rope_theta", "rope_theta", 10000.0))
    partial = _positive_number(cfg, "partial_rotary_factor", "partial_rotary_factor", 1.0)
    rope["rotary_dim"] = int(round(out["head_dim"] * partial))
    if not (0 < rope["rotary_dim"] <= out["head_dim"]) or rope["rotary_dim"] % 2:
        raise ConfigError("bad partial_rotary_factor")
    if scaling is not None:
        rope_type = ""
        for key in ("rope_type", "type"):
            if isinstance(scaling.get(key), str):
                rope_type = scaling[key]
        if rope_type not in ("", "default"):
            if rope_type != "llama3":
                raise ConfigError(f"unsupported rope type '{rope_type}' in field '{path}.rope_type'")
            rope["scaling"] = "llama3"
            rope["factor"] = _positive_number(scaling, "factor", path + ".factor")
            rope["low_freq_factor"] = _positive_number(scaling, "low_freq_factor",
                                                       path + ".low_freq_factor")
            rope["high_freq_factor"] = _positive_number(scaling, "high_freq_factor",
                                                        path + ".high_freq_factor")
            rope["original_max_positions"] = _positive_int(
                scaling, "original_max_position_embeddings",
                path + ".original_max_position_embeddings")
            if not rope["high_freq_factor"] > rope["low_freq_factor"]:
                raise ConfigError(f"field '{path}.high_freq_factor' must exceed low_freq_factor")
    out["rope"] = rope
    out["tie_word_embeddings"] = _flag(cfg, "tie_word_embeddings", False)
    activation = _string(cfg, "hidden_act", "silu")
    if activation != "silu":
        raise ConfigError(f"unsupported activation '{activation}'")
    if out["family"] == "qwen2":
        out["qkv_bias"], out["o_bias"], out["mlp_bias"] = True, False, False
    else:
        out["qkv_bias"] = out["o_bias"] = _flag(cfg, "attention_bias", False)
        out["mlp_bias"] = _flag(cfg, "mlp_bias", False)
    window = [0] * out["num_hidden_layers"]
    if out["family"] == "qwen2" and _flag(cfg, "use_sliding_window", False):
        size = _positive_int(cfg, "sliding_window", "sliding_window")
        first = (_positive_int(cfg, "max_window_layers", "max_window_layers")
                 if _find(cfg, "max_window_layers") is not None else 0)
        for layer in range(first, out["num_hidden_layers"]):
            window[layer] = size
    out["sliding_window"] = window
    dtype = _string(cfg, "dtype", _string(cfg, "torch_dtype", "float32"))
    dtypes = {"bfloat16": "bf16", "float16": "f16", "float32": "f32"}
    if dtype not in dtypes:
        raise ConfigError(f"unsupported dtype '{dtype}'")
    out["dtype"] = dtypes[dtype]
    bos = _token_ids(cfg, "bos_token_id")
    out["bos_token_id"] = bos[0] if bos else None
    out["eos_token_ids"] = _token_ids(cfg, "eos_token_id")
    for token in out["eos_token_ids"]:
        if token >= out["vocab_size"]:
            raise ConfigError("eos_token_id outside the vocabulary")
    return out


def expected_llmc_view(name):
    """What parse_like_llmc must return for a case's config.json."""
    arch, dtype, _, kw = CASES[name]
    heads = kw["num_attention_heads"]
    rope_in = kw["rope_parameters"]
    rope = {"scaling": "none", "theta": rope_in["rope_theta"]}
    head_dim = kw.get("head_dim", kw["hidden_size"] // heads)
    rope["rotary_dim"] = head_dim
    if rope_in["rope_type"] == "llama3":
        rope.update(scaling="llama3", factor=rope_in["factor"],
                    low_freq_factor=rope_in["low_freq_factor"],
                    high_freq_factor=rope_in["high_freq_factor"],
                    original_max_positions=rope_in["original_max_position_embeddings"])
    qwen = arch == "Qwen2ForCausalLM"
    return {
        "architecture": arch, "family": "qwen2" if qwen else "llama",
        "vocab_size": kw["vocab_size"], "hidden_size": kw["hidden_size"],
        "intermediate_size": kw["intermediate_size"],
        "num_hidden_layers": kw["num_hidden_layers"], "num_attention_heads": heads,
        "num_key_value_heads": kw["num_key_value_heads"], "head_dim": head_dim,
        "max_position_embeddings": kw["max_position_embeddings"],
        "rms_norm_eps": kw["rms_norm_eps"], "rope": rope,
        "tie_word_embeddings": kw["tie_word_embeddings"],
        "qkv_bias": qwen, "o_bias": False, "mlp_bias": False,
        "sliding_window": [0] * kw["num_hidden_layers"],
        "dtype": {"float32": "f32", "bfloat16": "bf16"}[dtype],
        "bos_token_id": kw["bos_token_id"], "eos_token_ids": [kw["eos_token_id"]],
    }


def check_config_file(name, path):
    with open(path) as f:
        cfg = json.load(f)
    got = parse_like_llmc(cfg)
    want = expected_llmc_view(name)
    if got != want:
        diff = {k: (got.get(k), want.get(k)) for k in set(got) | set(want)
                if got.get(k) != want.get(k)}
        raise ConfigError(f"{path}: llmc would read {diff} (got, wanted)")
    return cfg


# ---------------------------------------------------------------------------
# Models and reference outputs (torch from here on).

torch = None
transformers = None


def import_torch():
    global torch, transformers
    import torch as _torch
    import transformers as _transformers
    torch, transformers = _torch, _transformers
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    _transformers.logging.set_verbosity_error()


def build_model(name, seed):
    """The case's model, re-initialised from `seed`, in its checkpoint dtype."""
    arch, dtype, _, kw = CASES[name]
    if arch == "LlamaForCausalLM":
        config = transformers.LlamaConfig(**copy.deepcopy(kw))
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen2Config(**copy.deepcopy(kw))
        model = transformers.Qwen2ForCausalLM(config)
    model.eval()
    torch.manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():  # a tied lm_head is listed once
            if p.dim() >= 2:
                p.copy_(torch.randn(p.shape) * MATRIX_STD)
            elif pname.endswith(".bias"):
                p.copy_(torch.randn(p.shape) * BIAS_STD)
            elif "norm" in pname:
                p.copy_(1.0 + torch.randn(p.shape) * NORM_STD)
            else:
                raise RuntimeError(f"unexpected parameter {pname} {tuple(p.shape)}")
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    if tied != kw["tie_word_embeddings"]:
        raise RuntimeError(f"{name}: lm_head tied={tied}, config says {kw['tie_word_embeddings']}")
    if dtype == "bfloat16":
        model = cast_parameters(model, torch.bfloat16)
        try:  # save_pretrained also takes the dtype from the parameters
            model.config.dtype = torch.bfloat16
        except Exception:
            pass
    return model


def make_prompts(name):
    _, _, prompt_seed, kw = CASES[name]
    torch.manual_seed(prompt_seed)
    return [torch.randint(FIRST_PROMPT_TOKEN, kw["vocab_size"], (n,), dtype=torch.int64)
            for n in PROMPT_LENGTHS]


def cast_parameters(model, dtype):
    """Casts the parameters only: buffers (the rope inverse frequencies) stay
    fp32, as from_pretrained(dtype=...) leaves them and as llmc computes them."""
    for p in model.parameters():
        p.data = p.data.to(dtype)
    return model


def generation_copy(model, dtype):
    """A copy of `model` in `dtype` whose generation knows no EOS."""
    m = cast_parameters(copy.deepcopy(model), dtype).eval()
    m.generation_config.eos_token_id = None
    m.config.eos_token_id = None
    return m


def teacher_forced(model, ids):
    with torch.no_grad():
        return model(input_ids=ids[None], attention_mask=torch.ones_like(ids[None])).logits[0].float()


def greedy(model, prompt):
    """(tokens int64 [64], margins float32 [64]) from model.generate."""
    with torch.no_grad():
        out = model.generate(
            input_ids=prompt[None], attention_mask=torch.ones_like(prompt[None]),
            do_sample=False, num_beams=1, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
            eos_token_id=None, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
    tokens = out.sequences[0, prompt.numel():]
    if tokens.numel() != NEW_TOKENS or len(out.logits) != NEW_TOKENS:
        raise RuntimeError(f"generate returned {tokens.numel()} tokens")
    logits = torch.stack([step[0] for step in out.logits]).float()
    top = logits.topk(2, dim=-1)
    margins = top.values[:, 0] - top.values[:, 1]
    # Every token must be the raw-logit argmax (no logits processor, no EOS rule).
    clear = margins > 0
    if not torch.equal(top.indices[clear, 0], tokens[clear]):
        raise RuntimeError("generate picked a token that is not the argmax of its logits")
    return tokens, margins


def trusted_prefix(margins):
    """Greedy steps before the first one whose margin is under the bf16 threshold."""
    low = (margins < MIN_MARGIN["bf16"]).nonzero()
    return int(low[0, 0]) if low.numel() else int(margins.numel())


def evaluate(name, seed, full):
    """Reference outputs of a case for `seed`. With full=False stops at the first
    margin under the threshold and returns only the statistics."""
    model = build_model(name, seed)
    bf16 = CASES[name][1] == "bfloat16"
    prompts = make_prompts(name)
    stats = {"seed": seed, "ok": True, "min_margin": float("inf"),
             "min_margin_bf16": float("inf") if bf16 else None, "min_logit_std": float("inf"),
             "bf16_prefix": NEW_TOKENS if bf16 else None,
             "greedy_recheck_mismatch_bf16": 0}
    tensors = {}
    variants = [("fp32", torch.float32, "", "greedy_margin")]
    if bf16:
        variants.append(("bf16", torch.bfloat16, "_bf16", "greedy_bf16_margin"))
        if not full:
            variants.reverse()  # the bf16 margins are the likelier to fail: try them first
    for kind, dtype, suffix, margin_key in variants:
        m = generation_copy(model, dtype)
        stat_key = "min_margin" if kind == "fp32" else "min_margin_bf16"
        for i, prompt in enumerate(prompts):
            tokens, margins = greedy(m, prompt)
            stats[stat_key] = min(stats[stat_key], float(margins.min()))
            if kind == "fp32":
                failed = float(margins.min()) < MIN_MARGIN[kind]
            else:
                prefix = trusted_prefix(margins)
                stats["bf16_prefix"] = min(stats["bf16_prefix"], prefix)
                failed = prefix < BF16_MIN_PREFIX
            if failed:
                stats["ok"] = False
                if not full:
                    return stats, None
            # Teacher-forced check of the greedy run (no KV cache): same argmaxes.
            seq = torch.cat([prompt, tokens])
            all_logits = teacher_forced(m, seq)
            logits = teacher_forced(m, prompt)  # the prompt alone, as the runtime's prefill
            recheck = all_logits[prompt.numel() - 1: -1].argmax(-1)
            mismatch = int((recheck != tokens).sum())
            if mismatch:
                if kind == "fp32":
                    raise RuntimeError(f"{name} seed {seed} prompt {i}: generate and a full "
                                       f"forward disagree on {mismatch} fp32 greedy tokens")
                stats["greedy_recheck_mismatch_bf16"] += mismatch
            if kind == "fp32":
                stats["min_logit_std"] = min(stats["min_logit_std"], float(logits.std(-1).min()))
            if full:
                tensors[f"prompt.{i}"] = prompt.to(torch.int32).contiguous()
                tensors[f"logits{suffix}.{i}"] = logits.float().contiguous()
                tensors[f"greedy{suffix}.{i}"] = tokens.to(torch.int32).contiguous()
                tensors[f"{margin_key}.{i}"] = margins.float().contiguous()
    return stats, tensors


def _search_one(args):
    name, seed = args
    try:
        stats, _ = evaluate(name, seed, full=False)
    except RuntimeError as e:  # e.g. a cache/no-cache disagreement: just not this seed
        return {"seed": seed, "ok": False, "error": str(e), "min_margin": 0.0,
                "min_margin_bf16": 0.0, "bf16_prefix": 0}
    return stats


def _score(stats):
    """For a fallback when no seed passes: (bf16 prefix, fp32 margin), larger is better.
    Early exits leave some prompts unevaluated, so this is only a rough guide."""
    prefix = stats.get("bf16_prefix")
    return (0 if prefix is None else prefix, stats["min_margin"] / MIN_MARGIN["fp32"])


def search_seed(pool, workers, name, start, deadline):
    best = None
    seed = start
    tried = 0
    while True:
        batch = list(range(seed, seed + workers))
        results = pool.map(_search_one, [(name, s) for s in batch])
        tried += len(batch)
        for r in results:
            if r["ok"]:
                print(f"  {name}: seed {r['seed']} passes ({tried} tried)", flush=True)
                return r["seed"], True
            if best is None or _score(r) > _score(best):
                best = r
        seed += workers
        if time.time() > deadline:
            print(f"  WARNING {name}: no seed in {start}..{seed - 1} passes; best is "
                  f"{best['seed']} (fp32 margin {best['min_margin']:.2e}, "
                  f"bf16 prefix {best.get('bf16_prefix')})", flush=True)
            return best["seed"], False


# ---------------------------------------------------------------------------
# Writing a case.


def check_rope(name, model):
    """The llama3 cases must really change frequencies."""
    rope = CASES[name][3]["rope_parameters"]
    emb = getattr(model.model, "rotary_emb", None)
    if emb is None or not hasattr(emb, "inv_freq"):
        return "no rotary_emb.inv_freq to check"
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    plain = 1.0 / (rope["rope_theta"] ** (torch.arange(0, head_dim, 2, dtype=torch.float32)
                                         / head_dim))
    changed = int((~torch.isclose(emb.inv_freq.float(), plain, rtol=1e-5)).sum())
    if (rope["rope_type"] == "llama3") != (changed > 0):
        raise RuntimeError(f"{name}: rope {rope['rope_type']} changed {changed} frequencies")
    return f"{changed}/{head_dim // 2} inverse frequencies changed by scaling"


def write_case(out_dir, name, seed):
    from safetensors import safe_open
    from safetensors.torch import save_file

    case_dir = os.path.join(out_dir, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    model = build_model(name, seed)
    rope_note = check_rope(name, model)
    model.save_pretrained(case_dir)
    files = sorted(os.listdir(case_dir))
    if files != ["config.json", "generation_config.json", "model.safetensors"]:
        raise RuntimeError(f"{name}: save_pretrained wrote {files}")
    cfg = check_config_file(name, os.path.join(case_dir, "config.json"))

    stats, tensors = evaluate(name, seed, full=True)
    meta = {"case": name, "seed": str(seed), "torch": torch.__version__,
            "transformers": transformers.__version__,
            "attn_implementation": str(getattr(model.config, "_attn_implementation", None)),
            "new_tokens": str(NEW_TOKENS), "prompts": str(len(PROMPT_LENGTHS))}
    save_file(tensors, os.path.join(case_dir, "expected.safetensors"), metadata=meta)

    # The checkpoint: dtypes, tied lm_head absent, and a reload reproduces the logits.
    want_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[CASES[name][1]]
    params = 0
    with safe_open(os.path.join(case_dir, "model.safetensors"), "pt") as f:
        names = list(f.keys())
        for key in names:
            t = f.get_tensor(key)
            params += t.numel()
            if t.dtype != want_dtype:
                raise RuntimeError(f"{name}: {key} is {t.dtype}")
    if ("lm_head.weight" in names) == CASES[name][3]["tie_word_embeddings"]:
        raise RuntimeError(f"{name}: lm_head.weight presence does not match tying")
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(case_dir, dtype=torch.float32)
    reloaded.eval()
    again = teacher_forced(reloaded, tensors["prompt.0"].long())
    if not torch.allclose(again, tensors["logits.0"], atol=1e-5, rtol=1e-5):
        raise RuntimeError(f"{name}: reloaded checkpoint gives other logits")
    reload_note = ""
    if CASES[name][1] == "bfloat16":
        # The bf16 reference must be what from_pretrained(dtype=bfloat16) computes.
        reloaded = transformers.AutoModelForCausalLM.from_pretrained(case_dir, dtype=torch.bfloat16)
        reloaded.eval()
        diff = max(float((teacher_forced(reloaded, tensors[f"prompt.{i}"].long())
                          - tensors[f"logits_bf16.{i}"]).abs().max())
                   for i in range(len(PROMPT_LENGTHS)))
        inv = getattr(getattr(reloaded.model, "rotary_emb", None), "inv_freq", None)
        reload_note = (f"; bf16 reload: max logit diff {diff}, inv_freq "
                       f"{None if inv is None else inv.dtype}")
        if diff != 0.0:
            print(f"  WARNING {name}: from_pretrained(dtype=bfloat16) differs from the bf16 "
                  f"reference by {diff}", flush=True)

    size = sum(os.path.getsize(os.path.join(case_dir, f)) for f in os.listdir(case_dir))
    stats.update(params=params, bytes=size, rope=rope_note + reload_note, config=cfg)
    return stats


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--search", action="store_true",
                        help="try seeds from the recorded one on until the margins pass")
    parser.add_argument("--search-seconds", type=float, default=150.0,
                        help="time limit of the whole seed search")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    names = [n for n in args.cases.split(",") if n]
    for n in names:
        if n not in CASES:
            sys.exit(f"unknown case {n} (cases: {', '.join(CASES)})")

    pool = None
    if args.search:
        import multiprocessing
        # Fork the workers before this process computes anything (OpenMP and fork).
        import_torch()
        pool = multiprocessing.get_context("fork").Pool(args.workers)
    else:
        import_torch()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}", flush=True)

    started = time.time()
    seeds = {}
    failed = []
    rows = []
    for k, name in enumerate(names):
        seed = SEEDS[name]
        if pool is not None:
            # Each case may use its share of what is left, the last case all of it.
            left = args.search_seconds - (time.time() - started)
            share = left / (len(names) - k) if k + 1 < len(names) else left
            seed, _ = search_seed(pool, args.workers, name, seed, time.time() + max(share, 0))
        stats = write_case(args.out_dir, name, seed)
        seeds[name] = seed
        if not stats["ok"]:
            failed.append(name)
        rows.append((name, stats))
        print(f"  wrote {name} (seed {seed}): {stats['rope']}", flush=True)
    if pool is not None:
        pool.close()
        pool.join()

    print()
    print("| case | seed | params | bytes | min logit std | min greedy margin | "
          "min bf16 greedy margin | min bf16 trusted prefix |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, s in rows:
        bf = ("- | -" if s["min_margin_bf16"] is None
              else f"{s['min_margin_bf16']:.4f} | {s['bf16_prefix']}")
        extra = (f" (bf16 recheck mismatches {s['greedy_recheck_mismatch_bf16']})"
                 if s["greedy_recheck_mismatch_bf16"] else "")
        print(f"| {name} | {s['seed']} | {s['params']} | {s['bytes']} | "
              f"{s['min_logit_std']:.3f} | {s['min_margin']:.4f} | {bf}{extra} |")
    print("\nSEEDS = " + json.dumps(seeds, indent=4))
    if failed:
        print(f"FAILED margin thresholds: {', '.join(failed)}"
              + ("" if args.search else " (run with --search)"))
        sys.exit(1)


if __name__ == "__main__":
    main()
