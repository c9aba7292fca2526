# Sourced by the CLI test scripts: a scratch folder removed on exit, and `py`, a Python with numpy
# (Debian's /usr/bin/python3 here, the PyTorch one on the GPU machine); without one the script
# skips (exit 0 with a note), since numpy is only how the tests read .npy results.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
py=""
for p in /usr/bin/python3 python3; do
  if "$p" -c "import numpy" 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "SKIP: no python3 with numpy"; exit 0; }
