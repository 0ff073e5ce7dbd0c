"""The main job: a local Apache Kafka, the Faust and scoring workers, a replay, and a live summary
(`run`: the orchestration; `processes`: the children and the chaos; `summary`: what is shown)."""
