#!/usr/bin/env bash
# Run timm's own model test suite over the robin models: tests/test_models.py of the pinned timm
# release (the timm== line of .ci/requirements.txt), taken from its PyPI sdist.
#
# A developer tool, not part of the main test command. Everything happens in a temporary folder;
# nothing in the repository changes. Results and how to read them: docs/timm_compat.md.
#
#   .ci/timm_model_tests.sh                       # every robin model (about 30 min on 2 CPU cores)
#   .ci/timm_model_tests.sh -k "resnet18 and not cifar"   # extra arguments go to pytest; a -k
#                                                         # expression is ANDed with "robin"
#
# Environment: PYTHON (default .venv/bin/python), TIMM_VERSION (default: the pin),
# KEEP_TMP=1 keeps the temporary folder (the test file, pytest.ini and report.xml) for a look.
#
# timm's test file selects its forward_intermediates tests by the module a model is defined in
# (FEAT_INTER_FILTERS); the extracted copy gets robin's modules added to that list, or those tests
# would never see a robin model. That is the only change made to timm's file.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$repo/.venv/bin/python}
pin=$(sed -n 's/^timm==\([^ ]*\).*/\1/p' "$repo/.ci/requirements.txt")
version=${TIMM_VERSION:-$pin}
if [ -z "$version" ]; then
  echo "timm_model_tests: no timm== pin in .ci/requirements.txt; set TIMM_VERSION" >&2
  exit 2
fi
installed=$("$py" -c 'import timm; print(timm.__version__)')
if [ "$installed" != "$version" ]; then
  echo "timm_model_tests: warning: timm $installed is installed, the tests come from timm $version" >&2
fi

tmp=$(mktemp -d -t robin-timm-tests.XXXXXX)
cleanup() { if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $tmp"; else rm -rf "$tmp"; fi; }
trap cleanup EXIT

echo "timm_model_tests: downloading the timm $version sdist from PyPI"
"$py" -m pip download -q --disable-pip-version-check --no-deps --no-binary :all: "timm==$version" -d "$tmp/dl"
tar -xzf "$tmp/dl/timm-$version.tar.gz" -C "$tmp" "timm-$version/tests/test_models.py"
mkdir -p "$tmp/run"
mv "$tmp/timm-$version/tests/test_models.py" "$tmp/run/test_models.py"

"$py" - "$tmp/run/test_models.py" <<'EOF'
import pathlib, sys
path = pathlib.Path(sys.argv[1])
src = path.read_text()
anchor = "FEAT_INTER_FILTERS = ["
if src.count(anchor) != 1:
    sys.exit("timm_model_tests: FEAT_INTER_FILTERS not found in timm's test_models.py; update this script")
path.write_text(src.replace(anchor, anchor + " 'robin_resnet', 'robin_wideresnet', 'robustbench_names',", 1))
EOF

# timm's markers (its pyproject.toml is not in the sdist's tests/); timeout is inert without
# pytest-timeout, which robin does not install
cat > "$tmp/run/pytest.ini" <<'EOF'
[pytest]
markers =
    base
    cfg
    cfg_nonstd
    forward
    backward
    features
    fxforward
    fxbackward
    torchscript
    timeout
EOF

# only robin models: a -k expression given to this script narrows the selection, never widens it
select="robin"
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    -k) select="robin and ($2)"; shift 2 ;;
    -k*) select="robin and (${1#-k})"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done

cd "$tmp/run"
status=0
PYTHONDONTWRITEBYTECODE=1 "$py" -m pytest -p robin_plugin -p no:cacheprovider -c pytest.ini test_models.py \
  -k "$select" -q -rfE --junitxml=report.xml ${args[@]+"${args[@]}"} || status=$?

"$py" - report.xml <<'EOF'
"""Pass / fail / skip counts per timm test and model kind, then each failure's first line."""
import collections, re, sys
import xml.etree.ElementTree as ET

from robin_plugin.models.robustbench_names import robustbench_names

aliases = set(robustbench_names())
counts = collections.defaultdict(collections.Counter)
failures = []
for case in ET.parse(sys.argv[1]).iter("testcase"):
    m = re.match(r"(\w+)\[(?:\d+-)?([\w.]+)\]", case.get("name", ""))
    if not m:
        continue
    test, model = m.groups()
    kind = "alias" if model in aliases else "dense" if model.endswith("_dense") else "masked"
    bad = case.find("failure") if case.find("failure") is not None else case.find("error")
    outcome = "fail" if bad is not None else "skip" if case.find("skipped") is not None else "pass"
    counts[test][(kind, outcome)] += 1
    if bad is not None:
        failures.append(f"{test}[{model}]: {(bad.get('message') or '').splitlines()[0][:160] if bad.get('message') else ''}")
kinds = ("masked", "dense", "alias")
print()
print(f"{'timm test':44s}" + "".join(f"{k + ' pass/fail/skip':>26s}" for k in kinds))
for test in sorted(counts):
    c = counts[test]
    print(f"{test:44s}" + "".join(f"{c[(k, 'pass')]:>14d} /{c[(k, 'fail')]:>4d} /{c[(k, 'skip')]:>4d}" for k in kinds))
print("(masked: robin_<family>; dense: robin_<family>_dense; alias: RobustBench names, masked)")
if failures:
    print(f"\n{len(failures)} failure(s):")
    print("\n".join("  " + f for f in failures))
EOF
exit "$status"
