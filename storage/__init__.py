"""Storage: the S3 object store (minio client) and the SQL index (SQLAlchemy + Alembic)."""
