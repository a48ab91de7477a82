"""What a person looks at: figure conventions, the HTML report, and MLflow's web UI for the store."""
