"""Starts Routeur on one machine: NATS, the services, and (when asked) a Ceph radosgw S3 server."""
