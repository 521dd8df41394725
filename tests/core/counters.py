"""A user's module for tests/core/test_nested_calls_and_methods.py: a class with decorated methods."""

import os
import time

from clustrix import cluster


class Counter:
    def __init__(self, start):
        self.start = start
        self.calls = 0

    @cluster(executor="process")
    def add(self, x, y=0):
        self.calls += 1  # changes the copy that travelled, not the caller's object
        return self.start + x + y, self.calls, os.getpid()

    @cluster
    def wait(self, seconds):
        time.sleep(seconds)
        return self.start
