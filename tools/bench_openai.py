#!/usr/bin/env python3
"""Serving benchmark over HTTP against any OpenAI-compatible server.

`llmrun bench-serve` drives the scheduler in process; this drives a running
server (`llmrun serve`, or vLLM/SGLang for comparison) through its
/v1/completions endpoint, so HTTP, JSON and streaming are in the figures.
Each request is a random token-id prompt, streamed, with ignore_eos, and the
usage chunk at the end (stream_options.include_usage) counts its tokens.
Standard library only (asyncio, one connection per request).

usage: tools/bench_openai.py http://HOST:PORT [--num-requests N] [--input-len I]
       [--output-len O] [--shared-prefix-len L] [--concurrency C | --request-rate R]
       [--temperature T] [--top-p P] [--max-token-id V] [--model NAME]
       [--api-key KEY] [--seed S]
Prints output token throughput, TTFT and inter-token latency percentiles,
and, from an llmrun server's /metrics, how long its device waited for host
work between forwards during the run.
"""
import argparse
import asyncio
import json
import random
import sys
import time
import urllib.parse
import urllib.request


def percentiles(values):
    if not values:
        return "-"
    values = sorted(values)
    at = lambda q: values[min(len(values) - 1, int(q * len(values)))]
    return f"{sum(values) / len(values):.1f} / {at(0.5):.1f} / {at(0.9):.1f} / {at(0.99):.1f}"


async def read_chunked(reader):
    """The chunks of an HTTP/1.1 chunked body."""
    while True:
        size = int((await reader.readline()).split(b";")[0].strip(), 16)
        if size == 0:
            await reader.readline()
            return
        yield await reader.readexactly(size)
        await reader.readexactly(2)


async def one_request(url, headers, body, stats):
    """Sends one streamed completion; records TTFT, gaps between chunks and usage."""
    host, port = url.hostname, url.port or 80
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port, limit=1 << 20)
    request = [f"POST /v1/completions HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
               f"Content-Length: {len(payload)}", "Connection: close"] + headers
    writer.write(("\r\n".join(request) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    status = (await reader.readline()).decode()
    chunked = False
    while (line := await reader.readline()) not in (b"\r\n", b""):
        chunked |= line.lower().startswith(b"transfer-encoding:") and b"chunked" in line.lower()
    if " 200 " not in status or not chunked:
        stats["errors"].append(status.strip() + " " + (await reader.read(500)).decode(errors="replace"))
        writer.close()
        return
    buffer, last, first, tokens = b"", None, None, 0
    async for chunk in read_chunked(reader):
        buffer += chunk
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            data = json.loads(event[6:])
            if "error" in data:  # the server ended the stream with an error
                stats["errors"].append(json.dumps(data["error"]))
                writer.close()
                return
            now = time.perf_counter()
            if data.get("usage"):
                usage = data["usage"]
                tokens = usage["completion_tokens"]
                stats["prompt"] += usage["prompt_tokens"]
                stats["cached"] += (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
            if data.get("choices"):
                if first is None:
                    first = now
                    stats["ttft"].append((now - start) * 1e3)
                else:
                    stats["itl"].append((now - last) * 1e3)
                last = now
    writer.close()
    stats["tokens"] += tokens
    stats["latency"].append((time.perf_counter() - start) * 1e3)


def forward_seconds(base_url, headers):
    """llmrun's (forward, host-between-forwards) second counters; None elsewhere."""
    try:
        request = urllib.request.Request(base_url.rstrip("/") + "/metrics", headers=headers)
        text = urllib.request.urlopen(request).read().decode()
    except (OSError, ValueError):
        return None
    values = dict(line.split(" ", 1) for line in text.splitlines() if line and not line.startswith("#"))
    try:
        return (float(values["llmc_forward_seconds_total"]),
                float(values["llmc_host_seconds_between_forwards_total"]))
    except KeyError:
        return None


async def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--num-requests", type=int, default=256)
    parser.add_argument("--input-len", type=int, default=1000)
    parser.add_argument("--output-len", type=int, default=1000)
    parser.add_argument("--shared-prefix-len", type=int, default=0,
                        help="tokens every prompt starts with (before its input-len own tokens)")
    parser.add_argument("--concurrency", type=int, default=0, help="requests in flight at most (0: all)")
    parser.add_argument("--request-rate", type=float, default=0.0,
                        help="Poisson arrivals per second (0: all at once)")
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--max-token-id", type=int, default=30000, help="prompt ids are below it")
    parser.add_argument("--model", help="default: the first of /v1/models")
    parser.add_argument("--api-key")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    url = urllib.parse.urlparse(args.url)
    headers = [f"Authorization: Bearer {args.api_key}"] if args.api_key else []
    plain_headers = dict(h.split(": ", 1) for h in headers)
    model = args.model
    if not model:
        request = urllib.request.Request(args.url.rstrip("/") + "/v1/models", headers=plain_headers)
        model = json.load(urllib.request.urlopen(request))["data"][0]["id"]

    rng = random.Random(args.seed)
    prefix = [rng.randrange(100, args.max_token_id) for _ in range(args.shared_prefix_len)]
    bodies = [{"model": model,
               "prompt": prefix + [rng.randrange(100, args.max_token_id) for _ in range(args.input_len)],
               "max_tokens": args.output_len, "ignore_eos": True, "stream": True,
               "stream_options": {"include_usage": True}, "temperature": args.temperature,
               "top_p": args.top_p, "seed": i} for i in range(args.num_requests)]
    stats = {"ttft": [], "itl": [], "latency": [], "tokens": 0, "prompt": 0, "cached": 0, "errors": []}
    limit = asyncio.Semaphore(args.concurrency or args.num_requests)

    arrivals, at = [], 0.0  # seconds after the start
    for _ in bodies:
        arrivals.append(at)
        if args.request_rate > 0:
            at += rng.expovariate(args.request_rate)

    async def limited(body, arrival):
        await asyncio.sleep(arrival)
        async with limit:
            try:
                await one_request(url, headers, body, stats)
            except (OSError, asyncio.IncompleteReadError, ValueError) as error:
                stats["errors"].append(repr(error))

    before = forward_seconds(args.url, plain_headers)
    start = time.perf_counter()
    await asyncio.gather(*(limited(body, arrival) for body, arrival in zip(bodies, arrivals)))
    duration = time.perf_counter() - start
    after = forward_seconds(args.url, plain_headers)
    arrival = (f"concurrency {args.concurrency}" if args.concurrency else
               f"Poisson arrivals at {args.request_rate} requests/s" if args.request_rate > 0 else "all at once")
    prefix_text = f" (after a shared {args.shared_prefix_len}-token prefix)" if args.shared_prefix_len else ""
    print(f"bench_openai: {args.num_requests} requests, {args.input_len}{prefix_text} input + {args.output_len} "
          f"output tokens, temperature {args.temperature}, top-p {args.top_p}, {arrival}, {args.url}\n")
    print("| metric | value |\n| --- | --- |")
    print(f"| duration | {duration:.2f} s |")
    print(f"| completed / failed requests | {len(stats['latency'])} / {len(stats['errors'])} |")
    print(f"| output tokens | {stats['tokens']} |")
    print(f"| output token throughput | {stats['tokens'] / duration:.0f} tokens/s |")
    print(f"| TTFT mean / p50 / p90 / p99 | {percentiles(stats['ttft'])} ms |")
    print(f"| inter-chunk latency mean / p50 / p90 / p99 | {percentiles(stats['itl'])} ms |")
    print(f"| request latency mean / p50 / p90 / p99 | {percentiles(stats['latency'])} ms |")
    share = 100 * stats["cached"] / stats["prompt"] if stats["prompt"] else 0
    print(f"| prompt tokens from the prefix cache | {stats['cached']} of {stats['prompt']} ({share:.1f}%) |")
    if before and after:
        forwards, gaps = after[0] - before[0], after[1] - before[1]
        share = 100 * gaps / (forwards + gaps) if forwards + gaps > 0 else 0
        print(f"| server: forwards / host time between them | {forwards:.2f} s / {gaps:.3f} s ({share:.1f}%) |")
    for error in stats["errors"][:5]:
        print("error:", error[:300], file=sys.stderr)
    return 1 if stats["errors"] else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
