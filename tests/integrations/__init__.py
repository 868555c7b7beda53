# A package, so that its conftest is imported as integrations.conftest and does not take the
# place of tests/conftest.py as the module "conftest" that ferroloop's own tests import from.
