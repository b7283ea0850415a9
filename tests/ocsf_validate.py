#!/usr/bin/env python3
"""Validates OCSF events, one JSON object per line, against the published OCSF schema.

Usage: ocsf_validate.py VERSION FILE...

Each event is checked with the JSON Schema that the `ocsf-json-schema` package generates
from the OCSF schema export it ships (for the event's `class_uid` and the profiles in its
`metadata.profiles`), validated by `jsonschema` (draft 2020-12, formats checked): required
attributes, types, enumerations, the class's constraints, and no attribute the class does
not define. It also checks that `type_uid` is `class_uid * 100 + activity_id` and that
`metadata.version` is VERSION.

Prints one line per invalid event and, last, a JSON summary (`{"valid": N, "invalid": N,
"classes": {"3002": N, ...}}`). Exit status: 0 all valid, 1 some invalid, 3 a package is
missing (the message names it).
"""

import json
import sys

try:
    from jsonschema import Draft202012Validator
    from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
except ImportError as error:
    print(
        f"missing Python package `{error.name}`: install the OCSF validator with "
        "`python3 -m pip install ocsf-json-schema jsonschema`",
        file=sys.stderr,
    )
    sys.exit(3)


def main() -> int:
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    version = sys.argv[1]
    schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
    validators = {}
    classes = {}
    valid = invalid = 0
    for path in sys.argv[2:]:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                where = f"{path}:{number}"
                problems = check(schema, validators, version, line)
                if problems:
                    invalid += 1
                    for problem in problems[:5]:
                        print(f"{where}: {problem}")
                else:
                    valid += 1
                    uid = str(json.loads(line)["class_uid"])
                    classes[uid] = classes.get(uid, 0) + 1
    print(json.dumps({"valid": valid, "invalid": invalid, "classes": classes}))
    return 0 if invalid == 0 and valid > 0 else 1


def check(schema, validators, version, line):
    try:
        event = json.loads(line)
    except json.JSONDecodeError as error:
        return [f"not JSON: {error}"]
    if not isinstance(event, dict):
        return ["not a JSON object"]
    class_uid = event.get("class_uid")
    try:
        class_name = schema.lookup_class_name_from_uid(class_uid)
    except Exception:  # the package raises its own lookup errors
        return [f"class_uid {class_uid!r} is not an OCSF {version} class"]
    profiles = tuple(sorted(event.get("metadata", {}).get("profiles", [])))
    key = (class_name, profiles)
    if key not in validators:
        json_schema = schema.get_class_schema(class_name=class_name, profiles=list(profiles))
        validators[key] = Draft202012Validator(
            json_schema, format_checker=Draft202012Validator.FORMAT_CHECKER
        )
    problems = [
        f"{'/'.join(map(str, error.absolute_path)) or '(event)'}: {error.message}"
        for error in validators[key].iter_errors(event)
    ]
    activity_id = event.get("activity_id")
    if isinstance(class_uid, int) and isinstance(activity_id, int):
        if event.get("type_uid") != class_uid * 100 + activity_id:
            problems.append(f"type_uid {event.get('type_uid')} is not class_uid * 100 + activity_id")
    if event.get("metadata", {}).get("version") != version:
        problems.append(f"metadata.version is not {version}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
