"""The fewest AWS calls one sweep of the emulator's current fleet can take: listing pages, one
filtered read per distinct parameter group, and the batched EC2 reads. With --enforce, also the
region's parameter-group listing an Enforce pass reads. Prints JSON."""
import json
import math
import os
import sys

import boto3

endpoint = sys.argv[1]
enforce = "--enforce" in sys.argv[2:]
network = "--no-network" not in sys.argv[2:]  # a policy without network controls reads no EC2
kw = dict(endpoint_url=endpoint, region_name="us-east-1",
          aws_access_key_id="testing", aws_secret_access_key="testing")
rds = boto3.client("rds", **kw)
instances = [i for p in rds.get_paginator("describe_db_instances").paginate(PaginationConfig={"PageSize": 100})
             for i in p["DBInstances"] if i["Engine"] in ("postgres", "aurora-postgresql")]
clusters = [c for p in rds.get_paginator("describe_db_clusters").paginate(PaginationConfig={"PageSize": 100})
            for c in p["DBClusters"]]
standalone = [i for i in instances if not i.get("DBClusterIdentifier")]
groups = {i["DBParameterGroups"][0]["DBParameterGroupName"] for i in standalone}
cluster_groups = {c["DBClusterParameterGroup"] for c in clusters}
sgs = {g["VpcSecurityGroupId"] for i in instances for g in i.get("VpcSecurityGroups", [])}
sgs |= {g["VpcSecurityGroupId"] for c in clusters for g in c.get("VpcSecurityGroups", [])}
subnets = {s["SubnetIdentifier"] for i in instances for s in i.get("DBSubnetGroup", {}).get("Subnets", [])}
bound = {
    "DescribeDBInstances": max(1, math.ceil(len(instances) / 100)),
    "DescribeDBClusters": max(1, math.ceil(len(clusters) / 100)),
    "DescribeDBParameters": len(groups),
    "DescribeDBClusterParameters": len(cluster_groups),
}
if network:
    bound["DescribeSecurityGroups"] = math.ceil(len(sgs) / 200)
    bound["DescribeNetworkAcls"] = math.ceil(len(subnets) / 200)
if enforce:
    all_groups = sum(len(p["DBParameterGroups"]) for p in rds.get_paginator("describe_db_parameter_groups").paginate())
    all_cluster = sum(len(p["DBClusterParameterGroups"])
                      for p in rds.get_paginator("describe_db_cluster_parameter_groups").paginate())
    bound["DescribeDBParameterGroups"] = max(1, math.ceil(all_groups / 100))
    bound["DescribeDBClusterParameterGroups"] = max(1, math.ceil(all_cluster / 100))
print(json.dumps({"fleet": {"db_instances": len(instances), "clusters": len(clusters),
                            "parameter_groups": len(groups), "cluster_parameter_groups": len(cluster_groups),
                            "security_groups": len(sgs), "subnets": len(subnets)},
                  "lower_bound": bound, "lower_bound_total": sum(bound.values())}))
