// Starts `llmrun serve` on a free port for the server tests and stops it.
// Environment: LLMRUN (the binary), LLMC_SERVE_DIR (engine/ and model/ from
// prepare.sh), LLMC_NODE_MODULES (where install-client.sh put `openai`).
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

for (const name of ['LLMRUN', 'LLMC_SERVE_DIR', 'LLMC_NODE_MODULES'])
  if (!process.env[name]) throw new Error(`${name} is not set`);

export const OpenAI = createRequire(process.env.LLMC_NODE_MODULES + '/')('openai');

export async function startServer(args = []) {
  const dir = process.env.LLMC_SERVE_DIR;
  const child = spawn(process.env.LLMRUN,
    ['serve', `${dir}/engine`, '--weights', `${dir}/model`, '--backend', 'cpu', '--port', '0', ...args],
    { stdio: ['ignore', 'inherit', 'pipe'] });
  let log = '';
  const port = await new Promise((resolve, reject) => {
    child.stderr.on('data', (data) => {
      log += data;
      process.stderr.write(data);
      const match = /on http:\/\/[^:]+:(\d+)/.exec(log);
      if (match) resolve(Number(match[1]));
    });
    child.on('exit', (code) => reject(new Error(`llmrun serve exited (${code}) before listening:\n${log}`)));
  });
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    pid: child.pid,
    exited: () => child.exitCode !== null,
    client: (options = {}) => new OpenAI.OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0, ...options }),
    rssKiB: () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]),
    async stop() {
      if (child.exitCode !== null) return child.exitCode;
      const exit = new Promise((resolve) => child.on('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      return exit;
    },
  };
}

// The Prometheus samples of /metrics as { "name{labels}": value }.
export async function metrics(url) {
  const text = await (await fetch(`${url}/metrics`)).text();
  const samples = {};
  for (const line of text.split('\n'))
    if (line && !line.startsWith('#')) {
      const at = line.lastIndexOf(' ');
      samples[line.slice(0, at)] = Number(line.slice(at + 1));
    }
  return samples;
}

// Polls until check() holds (or fails after `ms`).
export async function eventually(check, ms = 3000) {
  const end = Date.now() + ms;
  for (;;) {
    if (await check()) return;
    if (Date.now() > end) throw new Error(`not within ${ms} ms: ${check}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
