SELECT * EXCEPT(_rank)
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id ORDER BY seq DESC, updated_at DESC) AS _rank
  FROM `${project}.${dataset}.run_states`
)
WHERE _rank = 1
