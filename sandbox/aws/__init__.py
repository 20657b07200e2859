"""The sandbox's AWS side: moto's server for Auto Scaling and EC2 plus a capacity simulator.

Run it with `python -m sandbox.aws --port 0 [--kubeconfig FILE]`; it prints one JSON line with the endpoint
and the groups it created. `SandboxAWSClient` (sandbox.aws.client) drives its control API; boto3 reaches the
AWS API at the same endpoint with dummy credentials. `SandboxAWSServer` (sandbox.aws.server) runs it in-process.
"""

from sandbox.aws.client import SandboxAWSClient, SandboxAWSError

__all__ = ["SandboxAWSClient", "SandboxAWSError"]
