-- schema: the fincore schema itself.  CREATE EXTENSION creates it (fincore.control
-- names it); here it is locked down.  Nobody but the owner creates objects in it,
-- and every name below is schema-qualified so that no search_path can redirect one.

REVOKE ALL ON SCHEMA fincore FROM PUBLIC;
GRANT USAGE ON SCHEMA fincore TO PUBLIC;
