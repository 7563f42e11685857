"""Generated from rpc.proto, kv.proto and auth.proto by scripts/gen_etcd_protos.py; do not edit
the ``*_pb2*`` modules by hand."""
