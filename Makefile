# Conveniences for those who have make: the commands themselves are ./run's (README),
# which need nothing installed first.
.PHONY: demo test bench bootstrap
bootstrap:
	@bash scripts/bootstrap.sh

demo test bench:
	@./run $@
