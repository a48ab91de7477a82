"""Statistics over replicates: intervals for the figures' bands and the claims that answer the homework's questions."""
