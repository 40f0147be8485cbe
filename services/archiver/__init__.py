"""Archiver: encrypts the four payload layers into the object store and mints signed URLs (payload issue)."""
