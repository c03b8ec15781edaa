"""CDK for Terraform stacks for the Nucleus Cloud SQL database, one per environment.

`main.py` builds the app; this package holds its parts:

- `database`: the stack itself, a thin translation of one `provision.config.Environment`
  into Terraform resources (instance, database, users, secrets, post-provision hook);
- `checks`: what an environment must state before it can be deployed by a stack;
- `hook`: the post-provision command and the content hash that re-triggers it;
- `parity`: the reviewed list of fields in which staging may differ from prod, and the
  comparison of two synthesized stacks against it.

Only `database` imports cdktf and the Google bindings (about 10 s to load); the other
modules are plain Python so that they can be used and tested without that cost.
"""
