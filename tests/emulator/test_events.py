"""EventBridge → SQS through the emulator, as the drift-event path uses it: a rule with an
event pattern delivers the whole event, `account` included, to its queue target."""
from __future__ import annotations

import json
from typing import Any

from conftest import client


def test_eventbridge_delivers_the_whole_event_with_its_account_to_sqs(emu: str) -> None:
    sqs: Any = client(emu, "sqs")
    events: Any = client(emu, "events")
    url = sqs.create_queue(QueueName="drift")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="pgbaseline-rds-events", State="ENABLED",
                    EventPattern=json.dumps({"source": ["aws.rds"], "detail-type": ["RDS DB Parameter Group Event"]}))
    events.put_targets(Rule="pgbaseline-rds-events", Targets=[{"Id": "q", "Arn": arn}])
    detail = {"SourceType": "DB_PARAM", "SourceIdentifier": "pg15-custom", "EventID": "RDS-EVENT-0037"}
    events.put_events(Entries=[
        {"Source": "aws.rds", "DetailType": "RDS DB Parameter Group Event", "Detail": json.dumps(detail)},
        {"Source": "aws.ec2", "DetailType": "AWS API Call via CloudTrail", "Detail": "{}"},
    ])
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)["Messages"]
    assert len(got) == 1, "the ec2 event does not match the pattern"
    body = json.loads(got[0]["Body"])
    assert body["account"] == "123456789012"
    assert body["region"] == "us-east-1"
    assert body["source"] == "aws.rds" and body["detail-type"] == "RDS DB Parameter Group Event"
    assert body["detail"] == detail
