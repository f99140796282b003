#!/usr/bin/env python3
"""Checks docs/openapi.yaml against the code: the same routes (src/api/metrics.cc
names each route the router knows), the same error codes (src/base/result_code.h),
and every $ref resolving. Usage: check-openapi.py SOURCE_DIR"""
import re
import sys
from pathlib import Path

import yaml

root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
spec = yaml.safe_load((root / "docs/openapi.yaml").read_text())
problems = []

if not str(spec.get("openapi", "")).startswith("3."):
    problems.append("not an OpenAPI 3 document")

metrics = (root / "src/api/metrics.cc").read_text()
code_routes = set(re.findall(r'return "(GET|POST|DELETE) (/v1/[^"]*)";', metrics))
code_routes |= {("GET", p) for p in re.findall(r'return "(/healthz|/readyz|/metrics)";', metrics)}
doc_routes = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
for method, path in sorted(code_routes - doc_routes):
    problems.append(f"route {method} {path} is served but not in openapi.yaml")
for method, path in sorted(doc_routes - code_routes):
    problems.append(f"route {method} {path} is in openapi.yaml but not served")

codes = set(re.findall(r"X\((\w+), \d+\)", (root / "src/base/result_code.h").read_text()))
enum = set(spec["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"])
for code in sorted(codes - enum):
    problems.append(f"error code {code} is missing from openapi.yaml")
for code in sorted(enum - codes):
    problems.append(f"error code {code} in openapi.yaml does not exist")


def refs(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


for ref in sorted(set(refs(spec))):
    target = spec
    for part in ref.removeprefix("#/").split("/"):
        target = target.get(part) if isinstance(target, dict) else None
    if target is None:
        problems.append(f"$ref {ref} does not resolve")

for p in problems:
    print("openapi:", p)
print(f"openapi: {len(doc_routes)} routes, {len(enum)} error codes, "
      f"{len(problems)} problems")
sys.exit(1 if problems else 0)
