// gen-pretok-ref.mjs — reference splits for the hand-written byte-level BPE pre-tokenizers
// (src/tokenizer/tok_pretok.c): the original regexes run by JavaScript's own Unicode-aware RegExp
// engine over random strings of letters, digits, white space, punctuation, contractions and a few
// non-ASCII characters. llama-bpe / qwen2 spell the (?i:...) contraction group out per letter, as
// llama.cpp does (older JavaScript engines lack inline modifiers).
//
// Usage: node scripts/gen-pretok-ref.mjs tests/data/pretok-ref.jsonl
// Output: one {"pre": ..., "text": ..., "pieces": [...]} per line.
import fs from 'node:fs';

const out = process.argv[2];
if (!out) {
  console.error('usage: gen-pretok-ref.mjs OUT_JSONL');
  process.exit(2);
}
const contractions = "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])";
const tail = '| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+';
const regexes = {
  gpt2: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
  'llama-bpe': contractions + '|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}' + tail,
  qwen2: contractions + '|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}' + tail,
};
// characters whose class tok_unicode.c knows exactly (plus ASCII)
const alphabet = [
  'a', 'b', 'e', 'h', 'l', 'o', 's', 't', 'A', 'S', 'T', 'M', 'D', 'L', 'R', 'V', 'E',
  '0', '1', '2', '7', '9', ' ', ' ', ' ', ' ', '\t', '\n', '\n', '\r', "'", "'", '.', ',', '!', '?', '-', '"', '(', ')', '$', '_',
  'é', 'ß', 'ж', 'λ', '日', '本', 'か', '한', '😀', '🎉', '²', '½', '٣', '\u00a0', '\u3000', '\u2003', '\u0301', '—', '“', '€', '\u200b',
];
const words = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "'S", "'LL", "'Re", ' the', '  ', '\r\n', ' 123', '12345', '...'];
let seed = 12345;
const rnd = (n) => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return Math.floor((seed / 2147483648) * n);
};
const lines = [];
for (let i = 0; i < 250; i++) {
  let text = '';
  const len = 1 + rnd(24);
  for (let k = 0; k < len; k++) text += rnd(5) === 0 ? words[rnd(words.length)] : alphabet[rnd(alphabet.length)];
  for (const [pre, src] of Object.entries(regexes)) {
    const re = new RegExp(src, 'gu');
    const pieces = [...text.matchAll(re)].map((m) => m[0]);
    if (pieces.join('') !== text) throw new Error(`regex ${pre} does not cover ${JSON.stringify(text)}`);
    lines.push(JSON.stringify({ pre, text, pieces }));
  }
}
fs.writeFileSync(out, lines.join('\n') + '\n');
console.log(`wrote ${lines.length} splits to ${out}`);
