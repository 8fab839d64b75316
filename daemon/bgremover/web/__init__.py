"""`bgremover web`: a page for the whole team, a client of the same folder contract as everyone else."""
