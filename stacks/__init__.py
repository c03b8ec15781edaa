"""CDK for Terraform stacks for the Nucleus Cloud SQL database, one per environment.

`main.py` builds the app; this package holds its parts:

- `database`: the stack itself, a thin translation of one `provision.config.Environment`
  into Terraform resources (instance, database, users, secrets, post-provision hook);
- `checks`: what an environment must state before it can be deployed by a stack;
- `hook`: the post-provision command and the content hash that re-triggers it;
- `naming`: stable Terraform names for the resources that come in lists;
- `parity`: the reviewed list of fields in which staging may differ from prod, and the
  comparison of two synthesized stacks against it;
- `bindings`: loads only the Google binding modules the stack uses.

Only `database` imports cdktf and the Google bindings; the other modules are plain
Python, so that a configuration error is reported, and they can be tested, without
waiting for Node and the provider bindings to load.
"""
