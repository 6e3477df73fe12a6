// gen-pretok-ref.mjs — reference splits for the hand-written byte-level BPE pre-tokenizers
// (src/tokenizer/tok_pretok.c): the original regexes run by JavaScript's own Unicode-aware RegExp
// engine over random strings of letters, digits, white space, punctuation, contractions and a few
// non-ASCII characters. llama-bpe / qwen2 spell the (?i:...) contraction group out per letter, as
// llama.cpp does (older JavaScript engines lack inline modifiers).
//
// The multi-regex pre-tokenizers run their regexes one after the other as llama.cpp's
// unicode_regex_split does: each splits every piece into its matches and the stretches between them.
// Regexes that llama.cpp runs with std::wregex on the code points (the deepseek families' explicit
// ranges) see non-ASCII white space as U+000B, as there. gpt-4o is llama.cpp's adaptation of the
// regex (a letter other than a-z is "upper", one other than A-Z "lower").
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

// ---- the multi-regex pre-tokenizers, on a wider alphabet ----
const cjk = '[\u4e00-\u9fa5\u0800-\u4e00\uac00-\ud7ff]+';
const dslLetters = '\\s?[' + [
  [0x0041, 0x005A], [0x0061, 0x007A], [0x00B5, 0x00B5], [0x00C0, 0x00D6], [0x00D8, 0x00F6], [0x00F8, 0x01BA],
  [0x01BC, 0x01BF], [0x01C4, 0x0293], [0x0295, 0x02AF], [0x0370, 0x0373], [0x0376, 0x0377], [0x037B, 0x037D],
  [0x037F, 0x037F], [0x0386, 0x0386], [0x0388, 0x038A], [0x038C, 0x038C], [0x038E, 0x03A1], [0x03A3, 0x03F5],
  [0x03F7, 0x0481], [0x048A, 0x052F], [0x0531, 0x0556], [0x10A0, 0x10C5], [0x13A0, 0x13F5], [0x13F8, 0x13FD],
  [0x1C90, 0x1CBA], [0x1CBD, 0x1CBF], [0x1D00, 0x1D2B], [0x1D6B, 0x1D77], [0x1D79, 0x1D9A], [0x1E00, 0x1F15],
  [0x1F18, 0x1F1D], [0x1F20, 0x1F45], [0x1F48, 0x1F4D], [0x1F50, 0x1F57], [0x1F59, 0x1F59], [0x1F5B, 0x1F5B],
  [0x1F5D, 0x1F5D], [0x1F5F, 0x1F7D], [0x1F80, 0x1FB4], [0x1FB6, 0x1FBC], [0x1FBE, 0x1FBE], [0x1FC2, 0x1FC4],
  [0x1FC6, 0x1FCC], [0x1FD0, 0x1FD3], [0x1FD6, 0x1FDB], [0x1FE0, 0x1FEC], [0x1FF2, 0x1FF4], [0x1FF6, 0x1FFC],
  [0x2102, 0x2102], [0x2107, 0x2107], [0x210A, 0x2113], [0x2115, 0x2115], [0x2119, 0x211D], [0x2124, 0x2124],
  [0x2126, 0x2126], [0x2128, 0x2128], [0x212A, 0x212D], [0x212F, 0x2134], [0x2139, 0x2139], [0x213C, 0x213F],
  [0x2145, 0x2149], [0x214E, 0x214E], [0x2183, 0x2184], [0x2C00, 0x2C7B], [0x2C7E, 0x2CE4], [0x2CEB, 0x2CEE],
  [0x2CF2, 0x2CF3], [0xA640, 0xA66D], [0xA680, 0xA69B], [0xA722, 0xA76F], [0xA771, 0xA787], [0xA78B, 0xA78E],
  [0xAB70, 0xABBF], [0xFB00, 0xFB06], [0xFB13, 0xFB17], [0xFF21, 0xFF3A], [0xFF41, 0xFF5A], [0x10400, 0x1044F],
  [0x104B0, 0x104D3], [0x104D8, 0x104FB], [0x10C80, 0x10CB2], [0x10CC0, 0x10CF2], [0x118A0, 0x118DF],
  [0x1E900, 0x1E943],
].map(([a, b]) => `\\u{${a.toString(16)}}-\\u{${b.toString(16)}}`).join('') + ']+';
const stages = {
  gpt2: [[regexes.gpt2]],
  'llama-bpe': [[regexes['llama-bpe']]],
  qwen2: [[regexes.qwen2]],
  starcoder: [['\\p{N}'], [regexes.gpt2]],
  falcon: [['[\\p{P}\\$\\+<=>\\^~\\|`]+'], [regexes.gpt2], ['[0-9][0-9][0-9]', 'w']],
  default: [['[\\p{P}\\$\\+<=>\\^~\\|]+'], [regexes.gpt2], ['\\p{N}+'], ['[0-9][0-9][0-9]', 'w']],
  'deepseek-coder': [['[\\r\\n]'], ['\\s?\\p{L}+'], ['\\s?\\p{P}+'], [cjk, 'w'], ['\\p{N}']],
  'deepseek-llm': [['[\\r\\n]'], [dslLetters, 'w'], ['\\s?[!-/:-~\\uff01-\\uff0f\\uff1a-\\uff5e\\u2018-\\u201f\\u3000-\\u3002]+', 'w'],
    ['\\s+$', 'w'], [cjk, 'w'], ['\\p{N}+']],
  'deepseek-v3': [['\\p{N}{1,3}'], ['[\\u4e00-\\u9fa5\\u3040-\\u309f\\u30a0-\\u30ff]+', 'w'],
    ['[!"#$%&\'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+']],
  'gpt-4o': [['[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))*((?=[\\p{L}])([^A-Z]))+' + contractions + '?|' +
    '[^\\r\\n\\p{L}\\p{N}]?((?=[\\p{L}])([^a-z]))+((?=[\\p{L}])([^A-Z]))*' + contractions + '?|' +
    '\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+']],
};
// U+0085 and U+FEFF are left out: JavaScript's \s disagrees with Unicode's White_Space on them
const wide = [...alphabet, '3', '4', '5', '6', '8', '~', '`', '|', '/', '+', '<', '=', '^', '@', '#', '[', ']', '{', '}', ':',
  'ä', 'É', 'Ω', 'ǅ', 'ʰ', '中', '龥', 'ア', 'ひ', '가', 'ࠀ', 'Ⅷ', '\u0301', '\u0903', '\u200d', '£', '©', '：', '、', '。', '‘', '”',
  '！', 'Ａ', 'ｚ', '\u2028', '\u1680'];
const wideWords = [...words, 'Hello', 'WORLD', 'camelCase', 'ÀB', 'ÉCOLE', 'naïve', '3.14', '100000', '  \n', '\t\t'];
for (let i = 0; i < 400; i++) {
  let text = '';
  const len = 1 + rnd(24);
  for (let k = 0; k < len; k++) text += rnd(4) === 0 ? wideWords[rnd(wideWords.length)] : wide[rnd(wide.length)];
  for (const [pre, list] of Object.entries(stages)) {
    let pieces = [text];
    for (const [src, mode] of list) {
      const re = new RegExp(src, 'gu');
      const next = [];
      for (const p of pieces) {
        // std::wregex in llama.cpp: non-ASCII white space reads as U+000B (one UTF-16 unit either way)
        const seen = mode === 'w' ? p.replace(/[\u0080-\uffff]/g, (ch) => (/\s/u.test(ch) ? '\v' : ch)) : p;
        let last = 0;
        for (const m of seen.matchAll(re)) {
          if (m.index > last) next.push(p.slice(last, m.index));
          next.push(p.slice(m.index, m.index + m[0].length));
          last = m.index + m[0].length;
        }
        if (last < p.length) next.push(p.slice(last));
      }
      pieces = next;
    }
    if (pieces.join('') !== text) throw new Error(`${pre} does not cover ${JSON.stringify(text)}`);
    lines.push(JSON.stringify({ pre, text, pieces }));
  }
}
fs.writeFileSync(out, lines.join('\n') + '\n');
console.log(`wrote ${lines.length} splits to ${out}`);
