#!/bin/sh
# User data of every instance the pipeline runs commands on (builders, test and probe instances,
# dev and staging). Debian's official AMIs ship no SSM agent, and without one Run Command cannot
# reach the instance: install it from the region's own bucket and start it. An AMI built from a
# builder keeps the agent, so on those this finds it running and does nothing.
set -eu
if systemctl is-active --quiet amazon-ssm-agent || systemctl is-active --quiet snap.amazon-ssm-agent.amazon-ssm-agent; then
  exit 0
fi
# IMDSv2 only (the launch sets HttpTokens=required): a session token first.
token=$(curl -fsS -X PUT http://169.254.169.254/latest/api/token -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
region=$(curl -fsS -H "X-aws-ec2-metadata-token: $token" http://169.254.169.254/latest/meta-data/placement/region)
arch=$(dpkg --print-architecture)
curl -fsS --retry 5 -o /tmp/amazon-ssm-agent.deb \
  "https://s3.${region}.amazonaws.com/amazon-ssm-${region}/latest/debian_${arch}/amazon-ssm-agent.deb"
dpkg -i /tmp/amazon-ssm-agent.deb
rm -f /tmp/amazon-ssm-agent.deb
systemctl enable --now amazon-ssm-agent
