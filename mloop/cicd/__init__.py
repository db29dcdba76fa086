"""Pipeline CI/CD: `mloop ci`, frozen pipeline versions, build contexts, the load test."""
