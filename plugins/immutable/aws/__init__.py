"""The aws platform: AMIs, copy_image, Auto Scaling blue/green behind ALB weights, CloudWatch gates.

Every AWS call goes through a hook in `immutable.aws.hooks` (AwsBaseHook with `client_type`), built
for one region from the platform's `aws.connection_id`. Only the hook modules import boto3 and the provider;
callers import them inside functions, so DAG files stay import-light.
"""
