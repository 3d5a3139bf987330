# Helper of tokenize.test: checks --stop and --stop-token-ids against a free run.
import json
import subprocess
import sys

engine, model = sys.argv[1], sys.argv[2]
base = ["llmrun", "generate", engine, "--weights", model, "--prompt", "Hello, world", "--add-bos",
        "--max-tokens", "8", "--temperature", "0", "--json", "--ignore-eos"]


def run(*extra):
    return json.loads(subprocess.run(base + list(extra), check=True, capture_output=True, text=True).stdout)


free = run()
text, tokens = free["text"], free["tokens"]
assert len(text) >= 6 and free["finish_reason"] == "length", free
stop = text[3:6]
cut = run("--stop", stop)
assert cut["finish_reason"] == "stop" and cut["text"] == text[: text.find(stop)], (cut, stop)
print("stop string: ok")
by_id = run("--stop-token-ids", str(tokens[2]))
assert by_id["finish_reason"] == "stop" and by_id["tokens"] == tokens[: tokens.index(tokens[2]) + 1], by_id
print("stop token: ok")
