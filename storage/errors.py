"""Errors of the storage package. minio / urllib3 / SQLAlchemy errors never leave it untranslated.

LiuhenError
 └── StorageError
      ├── ObjectStoreError        the S3 store failed or refused
      │    ├── ObjectNotFound     no such key / version
      │    ├── ObjectLocked       retention forbids the change (WORM working as meant)
      │    └── StoreUnavailable   cannot reach or start the store
      └── IndexError_             the SQL index failed
           ├── NotFound           no such item / case / derivative
           ├── Conflict           a uniqueness or state rule would be broken
           └── IndexUnavailable   cannot reach the database now (down, restarting, busy)
"""

from __future__ import annotations

from integrity.errors import LiuhenError


class StorageError(LiuhenError):
    code = "storage_error"


class ObjectStoreError(StorageError):
    code = "object_store_error"


class ObjectNotFound(ObjectStoreError):
    code = "object_not_found"


class ObjectLocked(ObjectStoreError):
    code = "object_locked"


class StoreUnavailable(ObjectStoreError):
    code = "store_unavailable"


class IndexError_(StorageError):
    code = "index_error"


class NotFound(IndexError_):
    code = "not_found"


class Conflict(IndexError_):
    code = "conflict"


class IndexUnavailable(IndexError_):
    code = "index_unavailable"
