"""What the Airflow UI shows beyond the DAGs: operator extra links and the Releases page."""
