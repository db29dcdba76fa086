"""An example pipeline package: churn prediction with mloop, tested and deployed by pipeline CI/CD."""
