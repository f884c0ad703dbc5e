#!/usr/bin/env bash
# image-requirements.sh PIP WHEELHOUSE PYTHON_VERSION: each image's third-party wheels,
# pinned, as the pip resolver picks them from the wheelhouse for the image's extras:
# WHEELHOUSE/requirements-IMAGE.txt, for images/venv.sh.
set -euo pipefail
pip=$1 wheelhouse=$2 python_version=$3
declare -A spec=(
  [operator]="health-risk[operator,cli]"
  [flower]="health-risk[federated,cli]"
  [drift]="health-risk[drift,cli]"
  [inference]="health-risk[inference,cli]"
  [mlflow]="-r $wheelhouse/mlflow.in"
)
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
for image in "${!spec[@]}"; do
  # shellcheck disable=SC2086  # the mlflow spec is two words
  "$pip" install --quiet --dry-run --ignore-installed --no-index --only-binary=:all: \
    --python-version "$python_version" --target "$tmp/target" --report "$tmp/$image.json" \
    --find-links "$wheelhouse" --find-links "$wheelhouse/project" -c "$wheelhouse/constraints.txt" ${spec[$image]}
  "$(dirname "$pip")/python" - "$tmp/$image.json" > "$wheelhouse/requirements-$image.txt" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
    name, version = item["metadata"]["name"], item["metadata"]["version"]
    if name != "health-risk":
        print(f"{name}=={version}")
PY
done
