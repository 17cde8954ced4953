"""deploy/events: the EventBridge rules, queue policy, operator IAM statement and CloudFormation
example for drift events. The rules are run through moto's EventBridge into a real (emulated)
SQS queue: every write pgbaseline reads an event for is delivered, failed calls and unrelated
events are not; the event names match the operator's own list (src/posture/drift.rs)."""
from __future__ import annotations

import json
import re
import sys

import boto3
import pytest
import yaml
from moto import mock_aws

from conftest import DEPLOY, ROOT

# moto with the emulator's fidelity patches (EventBridge keeps "account" in what it delivers).
sys.path.insert(0, str(ROOT / "tests" / "emulator"))
from pgbaseline_emulator import patches  # noqa: E402

patches.apply()
EVENTS = DEPLOY / "events"
RULES = json.loads((EVENTS / "rules.json").read_text())


def operator_calls() -> dict[str, list[str]]:
    src = (ROOT / "src/posture/drift.rs").read_text()

    def names(const):
        block = src[src.index(f"const {const}: &[&str] = &["):]
        return re.findall(r'"([A-Za-z]+)"', block[:block.index("];")])
    return {"rds.amazonaws.com": names("RDS_CALLS"), "ec2.amazonaws.com": names("EC2_CALLS")}


def operator_releases() -> int:
    """How many times the operator hands a message back for another replica (scale-out)."""
    src = (ROOT / "src/controller/event_queue.rs").read_text()
    return int(re.search(r"const RELEASES: u32 = (\d+);", src).group(1))


def test_rules_name_exactly_the_calls_the_operator_reads():
    calls = operator_calls()
    assert calls["rds.amazonaws.com"] and calls["ec2.amazonaws.com"]
    for rule in RULES.values():
        d = rule["pattern"].get("detail", {})
        if "eventSource" in d:
            (source,) = d["eventSource"]
            assert sorted(d["eventName"]) == sorted(calls[source])
            assert d["errorCode"] == [{"exists": False}], "failed calls change nothing"


def test_cloudformation_example_holds_the_same_rules_and_least_privilege():
    cfn = yaml.safe_load((EVENTS / "cloudformation.yaml").read_text())
    res = cfn["Resources"]
    rules = {r["Properties"]["Name"]: r["Properties"] for r in res.values() if r["Type"] == "AWS::Events::Rule"}
    assert {n: r["EventPattern"] for n, r in rules.items()} == {n: r["pattern"] for n, r in RULES.items()}
    for r in rules.values():
        assert r["Targets"][0]["Arn"] == {"Fn::GetAtt": ["DriftQueue", "Arn"]}
    queue = res["DriftQueue"]["Properties"]
    assert queue["SqsManagedSseEnabled"] is True and queue["RedrivePolicy"]["maxReceiveCount"] > operator_releases()
    (stmt,) = res["OperatorConsumePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    iam = json.loads((EVENTS / "iam-policy-events.json").read_text())
    (plain,) = iam["Statement"]
    assert sorted(stmt["Action"]) == sorted(plain["Action"]) == sorted(
        ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"])
    assert stmt["Resource"] == {"Fn::GetAtt": ["DriftQueue", "Arn"]} and "*" not in plain["Resource"]
    (qs,) = res["DriftQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert qs["Principal"] == {"Service": "events.amazonaws.com"} and qs["Action"] == "sqs:SendMessage"
    assert "aws:SourceArn" in qs["Condition"]["ArnLike"]


def cloudtrail(source: str, name: str, error: str | None = None) -> dict:
    detail = {"eventSource": source, "eventName": name, "userIdentity": {"arn": "arn:aws:sts::123456789012:assumed-role/admin/alice"},
              "requestParameters": {"dBInstanceIdentifier": "orders"}}
    if error:
        detail["errorCode"] = error
    return {"Source": "aws.ec2" if source.startswith("ec2") else "aws.rds",
            "DetailType": "AWS API Call via CloudTrail", "Detail": json.dumps(detail)}


def rds_event(detail_type: str, category: str, source_type: str) -> dict:
    return {"Source": "aws.rds", "DetailType": detail_type,
            "Detail": json.dumps({"EventCategories": [category], "SourceType": source_type,
                                  "SourceIdentifier": "pg15-custom", "EventID": "RDS-EVENT-0037"})}


@mock_aws
def test_rules_deliver_what_the_operator_reads_and_nothing_else():
    region = "us-east-1"
    sqs = boto3.client("sqs", region_name=region)
    events = boto3.client("events", region_name=region)
    url = sqs.create_queue(QueueName="pgbaseline-drift")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for name, rule in RULES.items():
        events.put_rule(Name=name, EventPattern=json.dumps(rule["pattern"]), State="ENABLED")
        events.put_targets(Rule=name, Targets=[{"Id": "q", "Arn": arn}])

    def delivered(entry) -> list[dict]:
        events.put_events(Entries=[entry])
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        for m in got:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return [json.loads(m["Body"]) for m in got]

    for source, names in operator_calls().items():
        for name in names:
            (body,) = delivered(cloudtrail(source, name))
            assert body["detail"]["eventName"] == name
            assert body["account"] == "123456789012" and body["region"] == region
            assert body["detail-type"] == "AWS API Call via CloudTrail"
            assert delivered(cloudtrail(source, name, error="AccessDenied")) == [], f"failed {name} delivered"
    assert delivered(cloudtrail("rds.amazonaws.com", "CreateDBSnapshot")) == []
    assert delivered(cloudtrail("ec2.amazonaws.com", "RunInstances")) == []
    (body,) = delivered(rds_event("RDS DB Parameter Group Event", "configuration change", "DB_PARAM"))
    assert body["detail"]["SourceType"] == "DB_PARAM"
    assert delivered(rds_event("RDS DB Instance Event", "backup", "DB_INSTANCE")) == []
    assert delivered(rds_event("RDS DB Snapshot Event", "creation", "SNAPSHOT")) == []
