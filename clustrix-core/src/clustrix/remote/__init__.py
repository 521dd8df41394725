"""The remote toolkit: the runner that runs on the cluster, its environment, the code that travels, job directories."""
