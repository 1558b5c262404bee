#!/usr/bin/env bash
# Checks deploy/: checkov with no failed check (skips carry a written reason
# beside them), the Terraform files parse as HCL, the manifests and rules
# parse as YAML, and every metric an alert uses is one Envelope exports.
# Usage: scripts/check-deploy.sh PYTHON_VENV
set -euo pipefail
venv=$1
cd "$(dirname "$0")/.."
"$venv/bin/checkov" -d deploy --quiet --compact --skip-download
"$venv/bin/python" - <<'PY'
import glob, re, sys
import hcl2, yaml
for f in sorted(glob.glob("deploy/terraform/*.tf")):
    with open(f) as fh:
        hcl2.load(fh)
    print("parsed", f)
docs = []
for f in sorted(glob.glob("deploy/kubernetes/*.yaml")) + ["deploy/prometheus/alerts.yml"]:
    with open(f) as fh:
        loaded = [d for d in yaml.safe_load_all(fh) if d]
    docs.append((f, loaded))
    print("parsed", f, len(loaded), "documents")
source = "".join(open(f).read() for f in ["src/ops/metrics.rs"] + sorted(glob.glob("src/ops/metrics/*.rs")))
# Metrics registered directly, and those a collector encodes at scrape time.
registered = set(re.findall(r'registry\.register\(\s*"([a-z_]+)"', source))
registered |= set(re.findall(r'encode_descriptor\(\s*"([a-z_]+)"', source))
rules = docs[-1][1][0]["groups"][0]["rules"]
for r in rules:
    for name in re.findall(r"envelope_[a-z_]+", r["expr"]):
        base = re.sub(r"_(total|bucket|sum|count)$", "", name)[len("envelope_"):]
        if base not in registered:
            sys.exit(f"alert {r['alert']} uses {name}, which Envelope does not export")
print(len(rules), "alerts use exported metrics")
PY
