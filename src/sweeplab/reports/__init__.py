"""What people read: a run's report files and plots (files), the runs as a table (results), compare and its significance tests."""
