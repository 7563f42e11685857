"""The etcd v3 gRPC front end: etcd's own wire API (etcd 3.4's protos) over :class:`ApiService`.

``start_etcd_server(node, service, addr)`` serves KV, Lease, Cluster, Maintenance and Watch
beside the native front end (docs/etcd-compatibility.md lists what is supported).
"""
