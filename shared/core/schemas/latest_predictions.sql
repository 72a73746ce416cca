SELECT * EXCEPT(_rank)
FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY run_id, request_key ORDER BY attempt DESC, loaded_at DESC) AS _rank
  FROM `${project}.${dataset}.predictions`
)
WHERE _rank = 1
