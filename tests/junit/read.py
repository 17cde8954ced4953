"""Reads a JUnit XML file with junitparser (a JUnit consumer CI tools use) and prints what it
understood as JSON: {suite: {"properties": {...}, "cases": {case: {"result", "type", "message",
"classname"}}}, "_totals": {...}}. tests/check.rs compares it with `check -o json`.

    python tests/junit/read.py report.xml
"""
import json
import sys

from junitparser import Error, Failure, JUnitXml, Skipped


def result_of(case):
    for r in case.result:
        if isinstance(r, Failure):
            return "failure", r.type, r.message
        if isinstance(r, Error):
            return "error", r.type, r.message
        if isinstance(r, Skipped):
            return "skipped", r.type, r.message
    return "passed", None, None


def main(path):
    xml = JUnitXml.fromfile(path)
    out = {}
    for suite in xml:
        cases = {}
        for case in suite:
            result, kind, message = result_of(case)
            cases[case.name] = {
                "result": result,
                "type": kind,
                "message": message,
                "classname": case.classname,
            }
        out[suite.name] = {
            "properties": {p.name: p.value for p in suite.properties()},
            "cases": cases,
            "tests": suite.tests,
            "failures": suite.failures,
            "errors": suite.errors,
        }
    out["_totals"] = {"tests": xml.tests, "failures": xml.failures, "errors": xml.errors}
    json.dump(out, sys.stdout, indent=1, sort_keys=True)


if __name__ == "__main__":
    main(sys.argv[1])
