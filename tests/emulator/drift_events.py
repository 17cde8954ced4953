"""What a platform team's infrastructure does for pgbaseline's event path, against the emulator:
create the drift queue and the EventBridge rules of deploy/events/ (``setup``), and what AWS
does when someone changes a database: put the CloudTrail record on the default bus, where a rule
routes it to the queue (``cloudtrail``). ``raw`` sends a message straight to the queue (what no
rule would deliver: a failed call, a foreign account, garbage); ``depth`` counts what is left.

    drift-events setup --endpoint URL --queue NAME                    -> prints the queue URL
    drift-events cloudtrail --endpoint URL --name ModifyDBParameterGroup \\
        --params '{"dBParameterGroupName": "g"}' [--caller ARN] [--count N]
    drift-events raw --endpoint URL --queue-url URL --body TEXT
    drift-events depth --endpoint URL --queue-url URL                 -> prints visible+in flight
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import boto3

RULES = Path(__file__).resolve().parents[2] / "deploy" / "events" / "rules.json"
REGION = "us-east-1"
SOMEONE = "arn:aws:sts::123456789012:assumed-role/admin/alice"


def client(endpoint: str, service: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def setup(endpoint: str, queue: str) -> str:
    sqs, events = client(endpoint, "sqs"), client(endpoint, "events")
    url = sqs.create_queue(QueueName=queue, Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    for name, rule in json.loads(RULES.read_text()).items():
        events.put_rule(Name=name, EventPattern=json.dumps(rule["pattern"]), State="ENABLED")
        events.put_targets(Rule=name, Targets=[{"Id": "drift-queue", "Arn": arn}])
    return url


def cloudtrail(endpoint: str, name: str, params: dict[str, Any], caller: str, count: int) -> None:
    source = "ec2.amazonaws.com" if any(k in name for k in ("SecurityGroup", "NetworkAcl")) \
        else "rds.amazonaws.com"
    detail = {"eventSource": source, "eventName": name, "awsRegion": REGION,
              "userIdentity": {"type": "AssumedRole", "arn": caller},
              "requestParameters": params}
    entry = {"Source": "aws.ec2" if source.startswith("ec2") else "aws.rds",
             "DetailType": "AWS API Call via CloudTrail", "Detail": json.dumps(detail)}
    events = client(endpoint, "events")
    for _ in range(count):
        out = events.put_events(Entries=[entry])
        assert out["FailedEntryCount"] == 0, out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="drift-events")
    p.add_argument("command", choices=["setup", "cloudtrail", "raw", "depth"])
    p.add_argument("--endpoint", required=True)
    p.add_argument("--queue", default="pgbaseline-drift")
    p.add_argument("--queue-url")
    p.add_argument("--name")
    p.add_argument("--params", default="{}")
    p.add_argument("--caller", default=SOMEONE)
    p.add_argument("--count", type=int, default=1)
    p.add_argument("--body")
    a = p.parse_args(argv)
    if a.command == "setup":
        print(setup(a.endpoint, a.queue))
    elif a.command == "cloudtrail":
        cloudtrail(a.endpoint, a.name, json.loads(a.params), a.caller, a.count)
    elif a.command == "raw":
        client(a.endpoint, "sqs").send_message(QueueUrl=a.queue_url, MessageBody=a.body)
    else:
        attrs = client(a.endpoint, "sqs").get_queue_attributes(
            QueueUrl=a.queue_url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        print(int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
