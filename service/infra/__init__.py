"""Infrastructure every service module stands on: settings, database models and sessions, object
storage backends (`object_store`: a local folder or S3), locks, retries, the runtime (database +
storage + dispatcher), migrations, metrics, errors, pagination, tenant scoping of queries
(`tenancy`), idempotency and size/quota limits.
"""
