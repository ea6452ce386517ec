"""Finds framelens's packages: ``framework/`` installs as ``framelens``, ``plugins/`` as ``framelens.plugins``.

Everything else is in pyproject.toml; setuptools' own ``packages.find`` cannot rename
folders, so the two trees are walked here and named by where they install.
"""

from setuptools import find_packages, setup

packages = ["framelens", *(f"framelens.{p}" for p in find_packages("framework"))]
packages += ["framelens.plugins", *(f"framelens.plugins.{p}" for p in find_packages("plugins"))]

setup(packages=packages)
