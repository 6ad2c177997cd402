#!/usr/bin/env bash
# Builds engine1.tar.gz: a state directory written by the released engine
# (engine 1, commit 88aa03a, whose commit records have no "engine" field),
# holding decisions the current engine makes otherwise:
#   - t.json: id "job-1" reused for a different intent (engine 1: a retry
#     copy; now: rejected, taking a commit number);
#   - z.json: a copy of an array of three arrays of 400,000 zeros (engine
#     1: rejected, more than 1,048,576 values; now: applied, about 11 MB
#     is under 16 MiB);
#   - w.json, the last batch: two copies of a value of about 9 MB (engine
#     1: applied; now: rejected, more than 16 MiB copied).
# prev-w.json is w.json before the last batch, for a test of an interrupted
# last batch. Usage: make.sh STATEWARD-88aa03a-BINARY (run from this folder).
set -euo pipefail
sw=$1
out=$PWD/../engine1.tar.gz
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
dir=$work/state
mkdir "$dir"
"$sw" watch --dir "$dir" 2>"$work/watch.log" &
pid=$!
# A rejected result exits non-zero: the fixture wants those too.
sub() { "$sw" submit --dir "$dir" --wait --timeout 60s "$@" || true; }
sub --agent a --file t.json --if-version 0 '[{"op":"add","path":"","value":{"n":0}}]'
sub --agent a --file t.json --id job-1 '[{"op":"replace","path":"/n","value":1}]'
sub --agent a --file t.json --id job-1 '[{"op":"replace","path":"/n","value":2}]'
sub --agent a --file t.json '[{"op":"inc","path":"/n","value":10}]'
python3 -c 'print("[{\"op\":\"add\",\"path\":\"\",\"value\":{\"a\":[" + ",".join(["0"]*400000) + "]}}]")' |
	sub --agent b --file z.json --if-version 0
sub --agent b --file z.json '[{"op":"add","path":"/b","value":[]},{"op":"copy","from":"/a","path":"/b/-"},{"op":"copy","from":"/a","path":"/b/-"}]'
sub --agent b --file z.json '[{"op":"copy","from":"/a","path":"/b/-"}]'
sub --agent b --file z.json '[{"op":"copy","from":"/b","path":"/c"}]'
sub --agent b --file z.json --id after '[{"op":"add","path":"/c","value":1}]'
sub --agent c --file w.json --if-version 0 "[{\"op\":\"add\",\"path\":\"\",\"value\":{\"v\":[\"$(printf 'x%.0s' $(seq 1100))\"]}}]"
for _ in $(seq 13); do
	sub --agent c --file w.json '[{"op":"copy","from":"/v","path":"/v/-"}]' >/dev/null
done
cp "$dir/w.json" "$work/prev-w.json"
sub --agent c --file w.json '[{"op":"copy","from":"/v","path":"/w"},{"op":"copy","from":"/v","path":"/x"}]'
kill $pid
wait $pid || true
rm -f "$dir/.stateward/lock"
tar -C "$work" -czf "$out" --owner=0 --group=0 --sort=name state prev-w.json
