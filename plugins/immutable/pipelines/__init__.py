"""Task bodies of the DAGs: each function is one task's work, called from a thin @task in dags/."""
