// gen-hf-tokenizer-ref.mjs — writes the reference encodings tests/test_tokenizer.c checks edgespec's
// tokenizer against: Hugging Face's own tokenizer (the npm package @huggingface/tokenizers, a pure-JS
// port of the Rust `tokenizers` library) run on TinyStories-656K's tokenizer.json.
//
// Usage (the package is installed into a throw-away folder, not into the repository):
//   D=$(mktemp -d) && (cd $D && npm install @huggingface/tokenizers)
//   HF_TOKENIZERS=$D/node_modules/@huggingface/tokenizers \
//     node scripts/gen-hf-tokenizer-ref.mjs /work/shared/models/TinyStories-656K \
//          /work/shared/prompts/stories.txt tests/data/tinystories656k-tokenizer-ref.jsonl
//
// Output: one JSON object per line, {"text": ..., "ids": [...]}, ids as encode() returns them with
// add_special_tokens true (this tokenizer's post-processor puts BOS <|start_story|> = 1 first).
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const [modelDir, promptsFile, outFile] = process.argv.slice(2);
if (!modelDir || !promptsFile || !outFile) {
  console.error('usage: gen-hf-tokenizer-ref.mjs MODEL_DIR PROMPTS_TXT OUT_JSONL (env HF_TOKENIZERS=package dir)');
  process.exit(2);
}
const pkg = process.env.HF_TOKENIZERS;
if (!pkg) {
  console.error('set HF_TOKENIZERS to the installed @huggingface/tokenizers package folder');
  process.exit(2);
}
const { Tokenizer } = await import(pathToFileURL(path.join(pkg, 'dist', 'tokenizers.mjs')).href);

const tokenizerJson = JSON.parse(fs.readFileSync(path.join(modelDir, 'tokenizer.json'), 'utf8'));
const configPath = path.join(modelDir, 'tokenizer_config.json');
const tokenizerConfig = fs.existsSync(configPath) ? JSON.parse(fs.readFileSync(configPath, 'utf8')) : {};
const tok = new Tokenizer(tokenizerJson, tokenizerConfig);

const prompts = fs.readFileSync(promptsFile, 'utf8').split('\n').filter((l) => l.length > 0);
const extra = [
  'Hello, world!',
  'The year 2024 had 365 days; 12 months, 52 weeks.',
  'Call 555-0199 or 1-800-123-4567 now!!!',
  'Numbers: 0 1 22 333 4444 55555 3.14159 -42 +7 1,000,000',
  'Wait... what?! (Really?) [yes] {no} <maybe> "quoted" \'single\'',
  'a  b   c    d     e',
  '   leading spaces',
  'trailing spaces   ',
  ' one leading space',
  'Line one.\nLine two.\n\nLine four after a blank line.',
  '\n\nstarts with newlines',
  'ends with a newline\n',
  'Tabs\tbetween\twords',
  'Windows\r\nline ending',
  'I went to the café and ordered a crème brûlée.',
  'Naïve façade, jalapeño, Zürich, smørrebrød.',
  'The cat said 🐱 and the dog said 🐶! 🎉🎉',
  '日本語のテキストと中文文本。',
  'Ελληνικά και русский текст.',
  'Mixed: x² + y² = z², 5 € or £3, 100% ✓',
  "It's Tom's dog; they're sure we'll see it. I'd've known.",
  'ALL CAPS SHOUTING AND lower case whispers',
  'x',
  ' ',
  '  ',
  '\n',
  'Once upon a time, there was a little girl named Lily. She loved to play outside in the sunshine. One day, she saw a big, red ball in the park.',
  'The end.',
  'email@example.com http://example.org/path?q=1&r=2#frag',
  'snake_case and camelCase and kebab-case',
  'Zero-width\u200bspace and non\u00a0breaking space',
];
const texts = prompts.concat(extra);
const lines = texts.map((text) => JSON.stringify({ text, ids: tok.encode(text).ids }));
fs.writeFileSync(outFile, lines.join('\n') + '\n');
console.log(`wrote ${lines.length} encodings to ${outFile}`);
