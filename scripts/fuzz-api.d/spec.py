"""Writes the OpenAPI file as the fuzzed server accepts it: the writer name
restricted to the configured writers (the file allows any valid name, as
any deployment may configure its own).

    python3 spec.py IN.yaml OUT.yaml WRITER[,WRITER...]
"""
import sys

import yaml

source, target, writers = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
spec = yaml.safe_load(open(source))
spec["components"]["schemas"]["WriterName"]["enum"] = writers
yaml.safe_dump(spec, open(target, "w"), sort_keys=False)
