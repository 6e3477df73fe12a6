#!/usr/bin/env bash
# test_tokenizer_vectors.sh — llama.cpp's own tokenizer test vectors (../shared/tokenizer-tests: a
# vocabulary-only GGUF per model family, 46 strings, the ids llama.cpp gives them with no BOS and no
# special-token parsing) run through `edgespec tokenize --no-bos --ids`: every string of every file must
# give exactly llama.cpp's ids. Also the tokenize command's other forms (--json, plain, -p, errors).
. "$(dirname "$0")/lib.sh"
es_test_init tokenizer-vectors
py=$(es_venv_python) || exit 1
shared=${ES_SHARED:-../shared}
dir=$shared/tokenizer-tests

n_files=0
for gguf in "$dir"/ggml-vocab-*.gguf; do
  name=$(basename "$gguf" .gguf)
  name=${name#ggml-vocab-}
  n_files=$((n_files + 1))
  mkdir -p "$tmp/$name"
  # the strings of X.gguf.inp, one file each (0.txt, 1.txt, ...), bytes exact
  "$py" - "$gguf.inp" "$tmp/$name" <<'EOF' || { bad "$name: cannot split $gguf.inp"; continue; }
import sys
parts = open(sys.argv[1], 'rb').read().split(b'\n__ggml_vocab_test__\n')
assert parts[-1] == b'', 'the file does not end with a separator'
for i, s in enumerate(parts[:-1]):
    open('%s/%d.txt' % (sys.argv[2], i), 'wb').write(s)
EOF
  n_out=$(wc -l <"$gguf.out")
  n_in=$(ls "$tmp/$name" | wc -l)
  [ "$n_in" -eq 46 ] && [ "$n_out" -eq 46 ] && ok || bad "$name: $n_in strings and $n_out id lines, want 46 of each"
  agree=0
  for i in $(seq 0 $((n_in - 1))); do
    want=$(sed -n "$((i + 1))p" "$gguf.out" | xargs)
    got=$("$bin" tokenize -m "$gguf" -f "$tmp/$name/$i.txt" --no-bos --ids 2>"$tmp/err")
    if [ $? -ne 0 ]; then
      bad "$name string $i: tokenize failed: $(head -c 300 "$tmp/err")"
    elif [ "$(echo "$got" | xargs)" = "$want" ]; then
      agree=$((agree + 1))
    else
      bad "$name string $i ($(head -c 60 "$tmp/$name/$i.txt" | od -An -c | tr -s ' ' | head -c 200)): got [$got] want [$want]"
    fi
  done
  echo "$name: $agree/$n_in strings agree with llama.cpp"
  [ "$agree" -eq 46 ] && ok || bad "$name: $agree/46 strings agree"
done
[ "$n_files" -eq 9 ] && ok || bad "found $n_files vocabularies in $dir, want 9"

# the other forms of the command, on the GPT-2 vocabulary
g2=$dir/ggml-vocab-gpt-2.gguf
expect 0 "$bin" tokenize -m "$g2" -p "Hello world" --json
[ "$(wc -l <"$tmp/out")" -eq 1 ] && ok || bad "--json should print one line"
has "$tmp/out" '"ids":[15496,995]'
has "$tmp/out" '"pieces":["Hello"," world"]'
has "$tmp/out" '"count":2'
has "$tmp/out" '"pre":"gpt-2"'
expect 0 "$bin" tokenize -m "$g2" -p $'a\tb'
has "$tmp/out" "'\\t'"
[ "$(wc -l <"$tmp/out")" -eq 3 ] && ok || bad "plain output: one line per token: $(cat "$tmp/out")"
# SentencePiece adds BOS unless told not to
spm=$dir/ggml-vocab-llama-spm.gguf
expect 0 "$bin" tokenize -m "$spm" -p "Hello" --ids
[ "$(cat "$tmp/out")" = "1 15043" ] && ok || bad "llama-spm with BOS: $(cat "$tmp/out")"
expect 0 "$bin" tokenize -m "$spm" -p "Hello" --ids --no-bos
[ "$(cat "$tmp/out")" = "15043" ] && ok || bad "llama-spm without BOS: $(cat "$tmp/out")"
# --special: control-token texts are tokens only when asked for
expect 0 "$bin" tokenize -m "$spm" -p "<s>" --ids --no-bos --special
[ "$(cat "$tmp/out")" = "1" ] && ok || bad "<s> with --special: $(cat "$tmp/out")"
expect 0 "$bin" tokenize -m "$spm" -p "<s>" --ids --no-bos
[ "$(cat "$tmp/out")" != "1" ] && ok || bad "<s> without --special must not be BOS"
# errors: usage 2, runtime 1
expect 2 "$bin" tokenize -m "$g2"
expect 2 "$bin" tokenize -m "$g2" -p a -f b
expect 1 "$bin" tokenize -m "$tmp/missing.gguf" -p a
expect 1 "$bin" tokenize -m "$g2" -f "$tmp/missing.txt"
printf 'GGUF\3\0\0\0' >"$tmp/trunc.gguf"
expect 1 "$bin" tokenize -m "$tmp/trunc.gguf" -p a
es_test_finish test_tokenizer_vectors
